"""ID generation (paper 2.2-2.3): the T5 ID generator, diverse beam search, Algorithm 1, Ray sharding, IdTable."""
