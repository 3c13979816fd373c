"""airloop: the closed ML loop on Apache Airflow 3.

The package is importable in all three environments (control, runtime, serving);
modules import heavy libraries lazily so that each plane only pays for what it uses.
"""

__version__ = "0.1.0"
