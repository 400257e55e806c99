"""`flowcraft-fast dashboard`: a read-mostly web page for operators, served by the CLI.

`api` builds the JSON documents (`/api/queues`, `/api/runs`, `/api/runs/<runId>`) from the same
reads the CLI's `inspect`, `runs` and `status` make; `server` serves them and the page
(`page.PAGE`: one HTML document with its script inline, no frontend build step) with the
standard library's HTTP server; cancel and resume only with `--allow-actions`.
"""
