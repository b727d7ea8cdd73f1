"""Keras 3 training: data loading, models, training CLI, reports."""
