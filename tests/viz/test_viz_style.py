"""fmlab.viz.style: the default template carries the lab's fonts and colours, presentation mode enlarges fonts,
markers and lines without widening figures, and the memoised plotly path parser answers as plotly's own."""

import plotly.basedatatypes as bdt
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from fmlab.viz import style


@pytest.fixture
def notebook_mode():
    yield
    style.presentation(False)


def test_figures_get_the_lab_template_by_default():
    assert pio.templates.default == style.TEMPLATE
    fig = style.apply_style(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), title="a title")
    full = fig.to_plotly_json()["layout"]
    assert full["template"]["layout"]["font"]["size"] == style.FONT_SIZE
    assert list(full["template"]["layout"]["colorway"]) == style.SEQUENCE
    assert full["title"]["text"] == "a title" and full["width"] == style.FIG_SIZE[0]


def test_presentation_enlarges_fonts_markers_and_lines_but_not_widths(notebook_mode):
    def draw():
        fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="markers", marker=dict(size=[4, 8])),
                         go.Scatter(x=[0, 1], y=[1, 0], mode="lines", line=dict(width=2)), go.Heatmap(z=[[0, 1]]),
                         go.Bar(x=[0], y=[1])])
        return style.apply_style(fig, title="t")

    small = draw()
    style.presentation(scale=1.5)
    assert style.presentation_scale() == 1.5
    big = draw()
    assert big.layout.template.layout.font.size == round(1.5 * style.FONT_SIZE)
    assert list(big.data[0].marker.size) == [6.0, 12.0] and big.data[1].line.width == 3.0
    assert big.layout.width == small.layout.width <= style.NOTEBOOK_WIDTH
    style.presentation(False)
    assert draw().layout.template.layout.font.size == style.FONT_SIZE and style.presentation_scale() == 1.0
    with pytest.raises(ValueError, match="scale"):
        style.presentation(scale=3.0)


@pytest.mark.parametrize("path", ["xaxis2.title.text", "marker_size", "error_x.array", "data[1].line_width",
                                  "foo__bar_", "_leading", "layout.annotations[3].font.size", ""])
def test_the_memoised_path_parser_answers_as_plotly_does(path):
    parse = bdt._str_to_dict_path_full
    assert hasattr(parse, "original"), "fmlab.viz.style did not install the memoised parser"
    keys, starts = parse(path)
    assert (keys, starts) == parse.original(path)
    starts.append(-1)  # a caller mutating its copy does not change the cached answer
    assert parse(path) == parse.original(path)


def test_log_ticks_label_every_tick_in_full_and_leave_narrow_ranges_to_plotly():
    from fmlab.viz.style import log_ticks

    assert log_ticks([4.1, 0.12]) == {"tickvals": [0.2, 0.5, 1.0, 2.0], "ticktext": ["0.2", "0.5", "1", "2"]}
    assert log_ticks([2.9, 0.24])["ticktext"] == ["0.3", "0.5", "1", "2"]  # 1, 2, 3, 5 where 1, 2, 5 gives three
    narrow = log_ticks([0.9, 0.25])  # under a decade: every digit, never a bare "3" for 0.3
    assert narrow["tickvals"] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] and narrow["ticktext"][0] == "0.3"
    assert log_ticks([0.25, 0.29]) == {} and log_ticks([]) == {} and log_ticks([0.0, -1.0, float("nan")]) == {}
    assert log_ticks([3e-4, 2e-2])["ticktext"] == ["0.0005", "0.001", "0.002", "0.005", "0.01", "0.02"]
