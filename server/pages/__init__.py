"""Admin pages rendered by Flask: dashboard and the decision explorer."""
