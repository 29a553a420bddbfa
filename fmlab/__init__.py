"""fmlab: an interactive teaching lab for flow matching and its descendants.

Convention: t = 0 is noise x0 ~ N(0, I), t = 1 is data x1; x_t = (1 - t) x0 + t x1 on the linear path.
"""

__version__ = "0.1.0"
