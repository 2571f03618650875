"""The training engine (alternating recommender / generator stages on DeepSpeed) and Fusion pretraining."""
