"""The dashboard's one HTML document (`page.html` beside this module): the overview at `/`, a
run at `/runs/<runId>`.

Plain HTML, CSS and script inline (no build step, nothing fetched from elsewhere). The run
page draws the blueprint graph as SVG: nodes in layers by longest path from the start nodes
(edges back to an earlier layer, loops, drawn dashed), each coloured by its state, with the
error of a failed node under the graph. Every node and state carries `data-` attributes
(what the browser test reads).
"""

from importlib.resources import files

PAGE = (files(__package__) / "page.html").read_text(encoding="utf-8")
