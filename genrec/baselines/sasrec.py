"""SASRec (Kang & McAuley, ICDM'18): a small self-attentive sequential model that scores every item.

The model a practitioner would pick instead of a generative recommender, so it is evaluated in the same
leave-one-out splits, on the same full ranking of all items, with the same ``genrec.metrics``.

Loss: **full softmax cross-entropy over all items**, as RecBole's ``loss_type: CE`` (not the original paper's binary
cross-entropy with one sampled negative). RecBole materialises every prefix of a training sequence as its own sample
and predicts its last item; here the causal attention mask gives every prefix's prediction in one pass over the
sequence, so each training target (the same targets as ``leave_one_out(ds, "train")``) is one cross-entropy term.
Item embeddings are shared between input and output (scores are ``h · E_item``), as in RecBole.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from genrec import dist
from genrec.dataset import Dataset
from genrec.splits import Sample, visible_items


@dataclass
class SASRecConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    patience: int = 5  # epochs without a better validation score before stopping
    select_metric: str = "NDCG@10"
    seed: int = 0


class SASRec(nn.Module):
    """Item + position embeddings, pre-LN causal Transformer blocks, scores against the item embedding matrix."""

    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # index 0 = padding
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden, cfg.heads, 4 * cfg.hidden, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def _attention_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """Causal and padding mask, ``(batch * heads, L, L)``; a position always sees itself, so no row is empty."""
        length = seqs.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).triu(1)
        pad_key = (seqs == 0).unsqueeze(1).expand(-1, length, -1)
        eye = torch.eye(length, dtype=torch.bool, device=seqs.device)
        blocked = (causal | pad_key) & ~eye
        return blocked.repeat_interleave(self.cfg.heads, dim=0)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden state of every position of left-padded ``seqs`` (``(B, L)`` item indices) -> ``(B, L, hidden)``."""
        length = seqs.size(1)
        positions = torch.arange(length, device=seqs.device).unsqueeze(0)
        x = self.item_emb(seqs) * self.cfg.hidden**0.5 + self.pos_emb(positions)
        x = self.drop(x) * (seqs != 0).unsqueeze(-1)
        x = self.encoder(x, mask=self._attention_mask(seqs))
        return self.norm(x)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of all real items (padding column dropped): ``(..., n_items)``; column j is item index j + 1."""
        return hidden @ self.item_emb.weight[1:].T


def _left_pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[-length:]
        if row:
            out[i, length - len(row):] = torch.tensor(row)
    return out


class SASRecRecommender:
    """Trains SASRec on the training part of each user's sequence and ranks all items for evaluation samples."""

    def __init__(self, items: Sequence[str], cfg: SASRecConfig | None = None):
        self.cfg = cfg or SASRecConfig()
        self.keys = list(items)
        self.index = {key: i + 1 for i, key in enumerate(self.keys)}
        self.device = dist.device()
        torch.manual_seed(self.cfg.seed)
        self.model = SASRec(len(self.keys), self.cfg).to(self.device)
        self.samples_seen = 0
        self.history: list[dict[str, Any]] = []

    def training_windows(self, dataset: Dataset) -> list[tuple[list[int], list[int]]]:
        """(inputs, targets) windows of at most ``max_len`` over each user's training items; every target once."""
        windows = []
        for seq in dataset.users.values():
            train = [self.index[k] for k in visible_items(seq, "train")]
            inputs, targets = train[:-1], train[1:]
            for end in range(len(targets), 0, -self.cfg.max_len):
                start = max(0, end - self.cfg.max_len)
                windows.append((inputs[start:end], targets[start:end]))
        return windows

    def _length_batches(self, windows: list[tuple[list[int], list[int]]], rng: random.Random) -> list[list[tuple[list[int], list[int]]]]:
        """Shuffled batches of windows of similar length (little padding), in shuffled order."""
        order = sorted(range(len(windows)), key=lambda i: (len(windows[i][0]), rng.random()))
        size = self.cfg.batch_size
        batches = [[windows[i] for i in order[b:b + size]] for b in range(0, len(order), size)]
        rng.shuffle(batches)
        return batches

    def fit(
        self,
        dataset: Dataset,
        valid: Sequence[Sample] = (),
        evaluate: Callable[[list[list[str]], list[str]], dict[str, float]] | None = None,
        budget_s: float | None = None,
        max_epochs: int = 200,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train until ``max_epochs``, the training-time budget, or ``patience`` epochs without a better validation
        score; keep the weights of the best validation epoch. The budget counts training steps, not validation."""
        cfg = self.cfg
        windows = self.training_windows(dataset)
        if not windows:
            raise ValueError("no training targets: every user needs at least 4 interactions")
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        rng = random.Random(cfg.seed)
        best_score, best_state, best_epoch, stale = float("-inf"), None, -1, 0
        train_s = 0.0
        out_of_time = False
        for epoch in range(max_epochs):
            self.model.train()
            total, count = 0.0, 0
            batches = self._length_batches(windows, rng)
            bar = tqdm(batches, desc=f"sasrec epoch {epoch}", disable=not (progress and dist.is_main()), leave=False)
            for batch in bar:
                t0 = time.perf_counter()
                length = max(len(inp) for inp, _ in batch)
                seqs = _left_pad([inp for inp, _ in batch], length).to(self.device)
                tgts = _left_pad([tgt for _, tgt in batch], length).to(self.device)
                real = tgts != 0
                hidden = self.model(seqs)[real]
                loss = nn.functional.cross_entropy(self.model.scores(hidden), tgts[real] - 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n = int(real.sum())
                self.samples_seen += n
                total, count = total + loss.item() * n, count + n
                train_s += time.perf_counter() - t0
                bar.set_postfix(loss=f"{total / count:.3f}")
                if budget_s is not None and train_s >= budget_s:
                    out_of_time = True
                    break
            record: dict[str, Any] = {"epoch": epoch, "loss": total / max(count, 1), "train_s": train_s, "samples_seen": self.samples_seen}
            if valid and evaluate is not None:
                metrics = evaluate(self.recommend(valid, k=10), [s.target for s in valid])
                record["valid"] = metrics
                score = metrics[cfg.select_metric]
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
            self.history.append(record)
            if out_of_time or (valid and stale >= cfg.patience):
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return {"best_epoch": best_epoch, "best_valid": best_score, "epochs": len(self.history), "train_s": train_s,
                "samples_seen": self.samples_seen, "config": asdict(cfg), "history": self.history}

    @torch.no_grad()
    def recommend(self, samples: Sequence[Sample], k: int = 10, exclude_history: bool = False, batch_size: int = 512) -> list[list[str]]:
        """Top-``k`` item keys for each sample's history, ranked over all items."""
        self.model.eval()
        out: list[list[str]] = []
        for b in range(0, len(samples), batch_size):
            chunk = samples[b:b + batch_size]
            rows = [[self.index[key] for key in s.history] for s in chunk]
            seqs = _left_pad(rows, self.cfg.max_len).to(self.device)
            scores = self.model.scores(self.model(seqs)[:, -1])
            if exclude_history:
                for i, row in enumerate(rows):
                    if row:
                        scores[i, torch.tensor(row, device=self.device) - 1] = float("-inf")
            top = scores.topk(k, dim=-1).indices.cpu().tolist()
            out.extend([self.keys[j] for j in row] for row in top)
        return out
