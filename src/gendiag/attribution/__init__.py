"""Token attribution: SHAP values of the label log-odds, their faithfulness and aggregation."""
