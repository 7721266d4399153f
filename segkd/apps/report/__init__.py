"""``segkd report``: runs grouped into tables (``runs``, ``tables``), their roles (teacher, baseline,
students: ``roles``), the statistics against the baseline (``stats``, ``analysis``), measurements
(``measure``), figures, the prediction gallery, and the terminal and HTML renderings."""
