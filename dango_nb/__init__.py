"""dango_nb: notebook-driven DANGO."""
