"""Model serving: the MLServer runtime, the online-feature reader, the feedback log.

* :mod:`airloop.serving.online` reads Feast's online store without Feast (stdlib);
* :mod:`airloop.serving.mlserver` is the MLServer runtime (serving environment only);
* :mod:`airloop.serving.feedback` validates and appends ground-truth labels (stdlib);
* :mod:`airloop.serving.cli` adds ``airloop feedback`` and ``airloop predict``.

Nothing heavy is imported here: the CLI imports this package in every environment.
"""
