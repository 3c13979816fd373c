"""The step runtime plane: what ``airloop <step>`` runs, in a pod or the runtime
virtualenv. It holds the ML libraries (MLflow, Feast, Ray, Evidently, Great
Expectations, DVC) and imports nothing of the control plane, serving or the devstack.
"""
