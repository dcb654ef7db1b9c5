"""Figures (matplotlib, Agg) and self-contained HTML reports."""

from dinoeval.report.attention_page import write_attention_report
from dinoeval.report.html import png_data_uri
from dinoeval.report.results_page import write_results_report

__all__ = ["png_data_uri", "write_attention_report", "write_results_report"]
