"""Training pipeline for the three book models: data -> models -> train -> evaluate -> export."""
