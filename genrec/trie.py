"""Prefix trie over the tokenized IDs of all candidate items (paper 2.4, Eq. 2-3), stored as tensors.

Every ID is a token sequence followed by ``</s>``; a decoding step may only continue a real ID. The trie is kept in
CSR form: the outgoing edges of node ``n`` are ``edge_token[ptr[n]:ptr[n+1]]`` (sorted) leading to
``edge_child[...]``. With that layout one decoding step masks and advances a whole batch of beams with a handful of
tensor operations and no Python loop per beam:

* :meth:`PrefixTrie.edges` lists the outgoing edges of every beam's node (gathered scores of allowed tokens only),
  :meth:`PrefixTrie.allowed_mask` scatters them into a ``[beams, vocab]`` boolean mask;
* :meth:`PrefixTrie.advance` finds the child of (node, token) by ``searchsorted`` on ``node * stride + token``.

An ID may be a prefix of another ID (the shared node simply has a ``</s>`` edge besides its other edges). The node
reached by ``</s>`` is terminal and names its item. Terminal nodes, and the ``DEAD`` node reached by a token that
leaves the trie, only allow ``<pad>`` and lead to ``DEAD``: beam search can park beams there (they carry a score that
can never win), exactly as a ``prefix_allowed_tokens_fn`` must return a non-empty list for them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch


class PrefixTrie:
    """All item IDs as one tensor trie; ``keys[i]`` is the item of ``item`` index ``i``."""

    ROOT = 0

    def __init__(self, sequences: Mapping[str, Sequence[int]], eos_token_id: int, pad_token_id: int):
        """``sequences`` maps item key -> ID tokens *without* ``</s>`` (e.g. ``IdTable.token_ids(tokenizer)``)."""
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.keys: list[str] = []
        self._seqs: list[tuple[int, ...]] = []
        self._device = torch.device("cpu")
        self.insert(sequences)

    @classmethod
    def from_idtable(cls, idtable, tokenizer) -> "PrefixTrie":
        """The trie of every item of ``idtable``, tokenized with ``tokenizer``."""
        return cls(idtable.token_ids(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)

    def __len__(self) -> int:
        return len(self.keys)

    def insert(self, sequences: Mapping[str, Sequence[int]]) -> None:
        """Add items (cold start) and rebuild the tensors. Keys and token sequences must stay unique."""
        owner = {seq: key for key, seq in zip(self.keys, self._seqs)}
        known = set(self.keys)
        for key, tokens in sequences.items():
            seq = tuple(int(t) for t in tokens)
            if not seq:
                raise ValueError(f"item {key!r} has an empty tokenized ID")
            if self.eos_token_id in seq or self.pad_token_id in seq:
                raise ValueError(f"item {key!r}: its tokenized ID contains </s> or <pad>")
            if key in known:
                raise ValueError(f"item {key!r} is already in the trie")
            if seq in owner:
                raise ValueError(f"items {owner[seq]!r} and {key!r} have the same tokenized ID {list(seq)}")
            owner[seq] = key
            known.add(key)
            self.keys.append(key)
            self._seqs.append(seq)
        self._build()

    def _build(self) -> None:
        children: list[dict[int, int]] = [{}]
        node_item: list[int] = [-1]
        depth = 0
        for index, seq in enumerate(self._seqs):
            node = self.ROOT
            for tok in (*seq, self.eos_token_id):
                nxt = children[node].get(tok)
                if nxt is None:
                    nxt = len(children)
                    children[node][tok] = nxt
                    children.append({})
                    node_item.append(-1)
                node = nxt
            node_item[node] = index
            depth = max(depth, len(seq) + 1)
        self.dead = len(children)
        children.append({})
        node_item.append(-1)
        for node, kids in enumerate(children):
            if not kids:  # terminal nodes and DEAD
                kids[self.pad_token_id] = self.dead
        ptr, tokens, child = [0], [], []
        for kids in children:
            for tok in sorted(kids):
                tokens.append(tok)
                child.append(kids[tok])
            ptr.append(len(tokens))
        self.max_depth = depth  # generated tokens of the longest ID, </s> included
        self.stride = max(tokens) + 1
        self.ptr = torch.tensor(ptr, dtype=torch.long)
        self.edge_token = torch.tensor(tokens, dtype=torch.long)
        self.edge_child = torch.tensor(child, dtype=torch.long)
        edge_node = torch.repeat_interleave(torch.arange(len(children)), self.ptr[1:] - self.ptr[:-1])
        self.edge_key = edge_node * self.stride + self.edge_token
        self.node_item = torch.tensor(node_item, dtype=torch.long)
        # the node just before each item's </s> edge (used to exclude items from a user's results)
        self.item_parent = torch.empty(len(self._seqs), dtype=torch.long)
        terminal = self.edge_child[self.edge_token == self.eos_token_id]
        parents = edge_node[self.edge_token == self.eos_token_id]
        self.item_parent[self.node_item[terminal]] = parents
        self.to(self._device)

    @property
    def num_nodes(self) -> int:
        return self.dead + 1

    def to(self, device: torch.device | str) -> "PrefixTrie":
        """Move the tensors (in place, also those of later rebuilds) to ``device``; returns ``self``."""
        self._device = torch.device(device)
        for name in ("ptr", "edge_token", "edge_child", "edge_key", "node_item", "item_parent"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    def edges(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every outgoing edge of every node: (index into ``nodes``, edge index), grouped by node in input order."""
        nodes = nodes.reshape(-1)
        start = self.ptr[nodes]
        count = self.ptr[nodes + 1] - start
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        return rows, torch.repeat_interleave(start, count) + torch.arange(len(rows), device=nodes.device) - first

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """``[len(nodes), vocab_size]`` bool: True where the token continues a real ID from that node."""
        rows, edges = self.edges(nodes)
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self.edge_token[edges]] = True
        return mask

    def advance(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The node reached from each node by each token (``DEAD`` if that leaves the trie); same shape."""
        key = nodes * self.stride + tokens
        pos = torch.searchsorted(self.edge_key, key.reshape(-1)).reshape(key.shape).clamp_(max=len(self.edge_key) - 1)
        found = (self.edge_key[pos] == key) & (tokens < self.stride)
        return torch.where(found, self.edge_child[pos], torch.full_like(nodes, self.dead))

    def items_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item index of terminal nodes, -1 elsewhere."""
        return self.node_item[nodes]

    def walk(self, tokens: Sequence[int]) -> int:
        """The node reached from the root by ``tokens`` (``DEAD`` if they leave the trie)."""
        node = torch.tensor([self.ROOT], device=self.device)
        for tok in tokens:
            node = self.advance(node, torch.tensor([int(tok)], device=self.device))
        return int(node)

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Tokens that may follow the prefix ``tokens`` (``[pad]`` after a complete ID or off the trie)."""
        node = self.walk(tokens)
        return self.edge_token[self.ptr[node]:self.ptr[node + 1]].tolist()

    def sequence(self, index: int) -> list[int]:
        """The tokens of item ``index`` followed by ``</s>``."""
        return [*self._seqs[index], self.eos_token_id]
