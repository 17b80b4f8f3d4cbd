"""Report: one self-contained HTML page and a Markdown summary from every stage's outputs."""
