"""Kubernetes side of airloop: serving resources built and applied by the deploy step.

Imported lazily by the deploy step (only in ``kubernetes`` mode, targets ``seldon`` and
``kserve``), so local runs never import the ``kubernetes`` client.
"""
