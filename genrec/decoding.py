"""The one decoder: trie-constrained beam search for T5, batched over many users (paper 2.4).

It is Hugging Face's beam search (``generate(num_beams=B, prefix_allowed_tokens_fn=...)``, transformers 4.50+:
top-2B candidates per step, finished hypotheses kept in a B-slot table scored with ``length_penalty``, the
``early_stopping`` heuristic) step for step, with the per-beam Python callback replaced by the tensor trie
(:class:`genrec.trie.PrefixTrie`), so the ranking of every user is the one ``generate`` returns (with
``max_length = trie.max_depth + 1``, the longest ID plus ``</s>`` after the start token). The encoder runs once
per user; the decoder (:class:`genrec.t5step.T5StepDecoder`) one token per step, the 20 beams of a user sharing its
cross-attention keys and values, and the first step computed once per user (its beams are identical). Only the
scores of the tokens the trie allows are gathered from the log-probabilities (each row's ``logsumexp`` is all that
is needed of the rest). Many users are decoded in one forward pass, and a user leaves the batch as soon as no running
beam can still enter its top B (``generate`` would keep computing it in vain).

Besides what ``generate`` can do, a user's history items can be excluded (``</s>`` is masked after their last
token), which is off by default as in the paper.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .precision import autocast
from . import stop
from .t5step import T5StepDecoder, encode
from .trie import PrefixTrie

NEG = -1.0e9  # the score Hugging Face gives to beams and slots that must not win
Ranking = list[tuple[str, float]]


@torch.no_grad()
def constrained_beam_search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: PrefixTrie,
    num_beams: int = 20,
    k: int = 10,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    exclude: Sequence[Sequence[int]] | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Ranking]:
    """Top-``k`` distinct items (key, length-penalised log-probability) for every row of ``input_ids``.

    ``exclude`` holds, per row, item indices of ``trie`` that must not be returned. Fewer than ``k`` items come back
    only when the trie (minus exclusions) holds fewer. The model runs in eval mode (its mode is restored after).
    ``dtype``: the forward passes' compute precision (``genrec.precision``); log-probabilities and beam scores are
    float32 either way.
    """
    if k > num_beams:
        raise ValueError(f"k={k} needs at least as many beams (num_beams={num_beams})")
    was_training = model.training
    model.eval()
    try:
        with autocast(dtype, input_ids.device):
            return _search(model, input_ids, attention_mask, trie, num_beams, k, length_penalty, early_stopping, exclude)
    finally:
        model.train(was_training)


def _search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: PrefixTrie,
    num_beams: int,
    k: int,
    length_penalty: float,
    early_stopping: bool | str,
    exclude: Sequence[Sequence[int]] | None,
) -> list[Ranking]:
    device = input_ids.device
    if trie.device != device:
        raise ValueError(f"trie is on {trie.device}, inputs on {device}")
    bsz, B = input_ids.shape[0], num_beams
    eos = trie.eos_token_id
    max_length = trie.max_depth + 1  # the decoder start token + the longest ID + </s>
    hidden = encode(model, input_ids, attention_mask)
    decoder = T5StepDecoder(model, hidden, attention_mask, beams=B, max_steps=trie.max_depth)
    banned = _banned_keys(trie, exclude, bsz) if exclude is not None else None

    nodes = torch.full((bsz, B), PrefixTrie.ROOT, dtype=torch.long, device=device)
    running = torch.zeros(bsz, B, device=device)
    running[:, 1:] = NEG
    fin_score = torch.full((bsz, B), NEG, device=device)
    fin_item = torch.full((bsz, B), -1, dtype=torch.long, device=device)
    fin_done = torch.zeros(bsz, B, dtype=torch.bool, device=device)
    fin_valid = torch.zeros(bsz, B, dtype=torch.bool, device=device)
    improvable = torch.ones(bsz, 1, dtype=torch.bool, device=device)
    top_b = torch.arange(2 * B, device=device) < B
    users = torch.arange(bsz, device=device)  # the input rows still being decoded
    tokens = torch.full((bsz,), model.config.decoder_start_token_id, dtype=torch.long, device=device)
    results: list[Ranking] = [[] for _ in range(bsz)]

    def collect(rows: torch.Tensor) -> None:
        for user, items, scores, valid in zip(users[rows].tolist(), fin_item[rows].tolist(), fin_score[rows].tolist(),
                                              fin_valid[rows].tolist()):
            results[user] = [(trie.keys[i], s) for i, s, v in zip(items, scores, valid) if v][:k]

    for step in range(trie.max_depth):
        cur_len = step + 1  # tokens in the decoder so far (start token included)
        n = len(users)
        # c. the best 2B continuations over all beams of each user, among the tokens the trie allows
        top_scores, src, top_tokens, top_nodes = _top_continuations(decoder, decoder.step(tokens), running, nodes,
                                                                    users, trie, banned)
        # d. which of them stop: </s>, or the maximum length
        hits = (top_tokens == eos) | (cur_len + 1 >= max_length)
        # e. the B best unfinished ones keep running
        running_k = top_scores + hits.to(torch.float32) * NEG
        keep = torch.topk(running_k, k=B).indices
        running = torch.gather(running_k, 1, keep)
        nodes = torch.gather(top_nodes, 1, keep)
        beam_src = torch.gather(src, 1, keep)
        tokens = torch.gather(top_tokens, 1, keep).view(-1)
        # f. finished ones among the top B enter the table of finished hypotheses if they beat its worst
        just_finished = hits & top_b[None, :]
        full = fin_done.all(dim=-1, keepdim=True) & (early_stopping is True)
        penalised = top_scores / (cur_len ** length_penalty)
        penalised = penalised + full.to(torch.float32) * NEG
        penalised = penalised + (~improvable).to(torch.float32) * NEG
        penalised = penalised + (~just_finished) * NEG
        # slots filled from beams that descend from the NEG start scores (or that HF pushes down by NEG) are junk
        valid = just_finished & ~full & improvable & (top_scores > NEG / 10)
        merged = torch.cat((fin_score, penalised), dim=1)
        best = torch.topk(merged, k=B).indices
        fin_score = torch.gather(merged, 1, best)
        fin_item = torch.gather(torch.cat((fin_item, trie.items_at(top_nodes)), dim=1), 1, best)
        fin_done = torch.gather(torch.cat((fin_done, just_finished), dim=1), 1, best)
        fin_valid = torch.gather(torch.cat((fin_valid, valid), dim=1), 1, best)
        flat_src = (beam_src + torch.arange(n, device=device)[:, None] * B).view(-1)

        # g. can a running beam still beat the worst finished hypothesis?
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - 1
        else:
            best_len = cur_len
        best_running = running[:, :1] / (best_len ** length_penalty)
        worst_finished = torch.where(fin_done, fin_score.min(dim=1, keepdim=True).values, NEG)
        improvable = improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)
        # Hugging Face keeps decoding a finished user while others run, but nothing it finds can enter its table
        # any more, so finished users leave the batch.
        done = ~improvable[:, 0] | (fin_done.all(dim=-1) & (early_stopping is True))
        if bool(hits.all()) or bool(done.all()):
            break
        decoder.reorder(flat_src)
        if int(done.sum()) * 8 >= n:  # retiring copies the caches of the others: worth it for >= 1/8 of the batch
            collect(done.nonzero().flatten())
            live = (~done).nonzero().flatten()
            users, improvable = users[live], improvable[live]
            nodes, running, tokens = nodes[live], running[live], tokens.view(-1, B)[live].view(-1)
            fin_score, fin_item, fin_done, fin_valid = fin_score[live], fin_item[live], fin_done[live], fin_valid[live]
            decoder.select(live)
    collect(torch.arange(len(users), device=device))
    return results


def _top_continuations(
    decoder: T5StepDecoder, out: torch.Tensor, running: torch.Tensor, nodes: torch.Tensor, users: torch.Tensor, trie: PrefixTrie,
    banned: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``topk(log_softmax(logits) masked by the trie + running score, 2B)`` over each user's ``B x vocab``
    continuations (``out``: the decoder output, one row per beam, or per user on the first step, when a user's beams
    are identical).

    Only the allowed (beam, token) pairs are gathered, so after the first step a user has a few dozen candidates
    instead of ``B x vocab``; the values are the very sums ``generate`` ranks (masked ones are ``-inf`` there and
    can only be picked, as junk, when a user has fewer than 2B allowed continuations: here they are ``<pad>`` edges
    from beam 0 into ``DEAD``). Returns scores, source beam, token and child node, each ``[users, 2B]``.
    """
    n, B = nodes.shape
    device = nodes.device
    rows, edges = trie.edges(nodes)
    tokens = trie.edge_token[edges]
    values = decoder.log_probs_at(out, rows if out.shape[0] == n * B else rows // B, tokens) + running.view(-1)[rows]
    if banned is not None:
        eos = tokens == trie.eos_token_id
        values[eos] = torch.where(_is_banned(banned, nodes, users, trie)[rows[eos]], float("-inf"), values[eos])
    per_user = torch.bincount(rows // B, minlength=n)
    user_start = torch.cumsum(per_user, 0) - per_user
    owner = rows // B
    width = max(2 * B, int(per_user.max()))
    cand = torch.full((n, width), float("-inf"), device=device)
    cand[owner, torch.arange(len(rows), device=device) - user_start[owner]] = values
    top_scores, top_pos = torch.topk(cand, k=2 * B)
    real = top_pos < per_user[:, None]
    flat = torch.where(real, user_start[:, None] + top_pos, 0)
    src = torch.where(real, rows[flat] % B, 0)
    top_tokens = torch.where(real, tokens[flat], trie.pad_token_id)
    top_nodes = torch.where(real, trie.edge_child[edges[flat]], trie.dead)
    return top_scores, src, top_tokens, top_nodes


def _banned_keys(trie: PrefixTrie, exclude: Sequence[Sequence[int]], bsz: int) -> torch.Tensor:
    """Sorted ``row * num_nodes + parent`` of every excluded item's ``</s>`` edge."""
    if len(exclude) != bsz:
        raise ValueError(f"exclude has {len(exclude)} rows for a batch of {bsz}")
    keys = [row * trie.num_nodes + p for row, items in enumerate(exclude) for p in trie.item_parent[list(items)].tolist()]
    return torch.tensor(sorted(keys), dtype=torch.long, device=trie.device)


def _is_banned(banned: torch.Tensor, nodes: torch.Tensor, users: torch.Tensor, trie: PrefixTrie) -> torch.Tensor:
    """Per flattened beam: is ``</s>`` from its node an excluded item of its input row (``users``: row per user)?"""
    if banned.numel() == 0:
        return torch.zeros(nodes.numel(), dtype=torch.bool, device=nodes.device)
    key = (users[:, None] * trie.num_nodes + nodes).reshape(-1)
    pos = torch.searchsorted(banned, key).clamp_(max=len(banned) - 1)
    return banned[pos] == key


def pad_batch(prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` for a list of token lists."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        mask[i, : len(p)] = 1
    return ids.to(device), mask.to(device)


def rank_prompts(
    model,
    prompts: Sequence[Sequence[int]],
    trie: PrefixTrie,
    batch_size: int = 64,
    num_beams: int = 20,
    k: int = 10,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    exclude: Sequence[Sequence[int]] | None = None,
    progress: bool = False,
    workers: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Ranking]:
    """Rankings for many prompts, in input order; prompts are batched by length (shortest first) to limit padding.

    On a CPU, ``workers`` batches are decoded side by side by as many threads, each running its operations on
    ``torch.get_num_threads() // workers`` cores (default: 2 workers when there are at least 2 threads, 1 on other
    devices). A search step is a few hundred small operations that gain little from a second core, so two batches
    side by side use two cores better than one batch spread over both (``bench/eval_throughput.py``). Each batch is
    decoded on its own, so the rankings do not depend on ``workers``. ``dtype``: compute precision of the forward
    passes (each decoding thread enters its own autocast context). After a stop signal (``genrec.stop``) the
    remaining batches are skipped and their rankings left empty: the caller must check for the stop.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    device = trie.device
    threads = torch.get_num_threads()
    if workers is None:
        workers = 2 if device.type == "cpu" and threads >= 2 else 1
    if workers < 1 or (workers > 1 and device.type != "cpu"):
        raise ValueError(f"workers={workers}: must be >= 1, and 1 unless decoding on a CPU")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    results: list[Ranking] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), desc="decode", unit="user", disable=not progress)

    def decode(idx: list[int]) -> None:
        if stop.requested() is not None:  # the caller checks (genrec.stop.check_all) and stops
            return
        ids, mask = pad_batch([prompts[i] for i in idx], trie.pad_token_id, device)
        ranked = constrained_beam_search(
            model, ids, mask, trie, num_beams=num_beams, k=k, length_penalty=length_penalty,
            early_stopping=early_stopping, exclude=[exclude[i] for i in idx] if exclude is not None else None,
            dtype=dtype,
        )
        for i, r in zip(idx, ranked):
            results[i] = r
        bar.update(len(idx))

    was_training = model.training
    model.eval()  # once for all threads (each search would otherwise restore the mode while another runs)
    try:
        if workers == 1:
            for idx in batches:
                decode(idx)
        else:
            torch.set_num_threads(max(1, threads // workers))  # read by each new thread at its first operation
            try:
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(decode, batches))
            finally:
                torch.set_num_threads(threads)
    finally:
        model.train(was_training)
        bar.close()
    return results
