"""The bundled demo: a deterministic churn data generator and the ``airloop demo`` loop."""
