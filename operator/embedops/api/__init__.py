"""The embedops.dev/v1alpha1 API: pydantic models of the three custom resources.

These models are the single source of truth: the operator parses specs into them, and
`hack/gen_crds.py` generates `crds/` and the Helm chart's CRDs from them.
"""
