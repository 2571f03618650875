"""The evaluation harness: IDs for (unseen) datasets, trie-constrained decoding, HR/NDCG tables, recommend CLI."""
