"""Predictive pre-scaling: the forecast and the policy stage that acts on it, side by side.

- model.py: learns the rhythm of queue.rate_in from the loop's own samples and predicts it
  (rings of bucketed rates, seasonal folding, drift); knows nothing of replicas.
- stage.py: the pre-scale stage of the policy (docktor/policy/decide.py runs it after
  *recommend*), the warm start from a decision log, and the `docktor forecast` view.
"""
