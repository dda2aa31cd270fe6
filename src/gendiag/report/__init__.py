"""Reporting: the study's tables (CSV, Markdown, LaTeX) and figures (PDF, PNG)."""
