"""Code that runs inside worker pods (and in local mode): plain functions with typed configs."""
