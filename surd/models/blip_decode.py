"""BLIP caption decoding that computes each image's cross-attention keys and values once.

transformers' `generate` copies every image's encoder states to each beam, so the cross-attention
cache holds `beams` identical copies (12 layers × 577 tokens × 768, keys and values) that it reads,
and reorders, at every step, and it spends much of each step in Python. This decoder runs the same
modules with the same weights, keeps one copy of the cross-attention keys and values per image
and lets the beams of that image attend to it together (their queries stacked), preallocates the
self-attention cache, and reorders only that small cache between steps.

Two beam searches, each reproduced step for step (log-softmax in float32, the min-length rule on
EOS, the top 2·beams continuations, EOS counted only among the top `beams`):
- `lavis`: transformers 4.26's, as LAVIS' `blip_caption` runs it (the paper's captions): a
  finished hypothesis scores its summed log-probability over its whole length before EOS, prompt
  included; an image is done once its worst kept hypothesis beats the step's best candidate scored
  the same way; at max_length its open beams join the finished ones.
- `transformers`: transformers 5's vectorised search: the score is over the generated length, EOS
  included, with 5.x's early-stop heuristic for `early_stopping=False`.
One beam is greedy search in both. tests/test_models.py checks `transformers` against `generate`
and tests/test_lavis.py checks `lavis` against transformers 4.26 in LAVIS' venv, token for token.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

NEG = -1.0e9


def supports(model: Any) -> str | None:
    """None when this decoder reproduces `generate` for the model; else why it does not."""
    gc = model.text_decoder.generation_config
    checks = {
        "repetition_penalty": (None, 1.0),
        "no_repeat_ngram_size": (None, 0),
        "early_stopping": (None, False),
        "bad_words_ids": (None,),
        "forced_bos_token_id": (None,),
        "forced_eos_token_id": (None,),
        "do_sample": (None, False),
        "num_beam_groups": (None, 1),
        "diversity_penalty": (None, 0.0),
        "suppress_tokens": (None,),
        "begin_suppress_tokens": (None,),
        "exponential_decay_length_penalty": (None,),
        "min_new_tokens": (None,),
        "max_new_tokens": (None,),
    }
    for name, allowed in checks.items():
        if getattr(gc, name, None) not in allowed:
            return f"generation_config.{name}={getattr(gc, name)!r}"
    return None


def _split(x: Tensor, heads: int) -> Tensor:  # (n, t, d) → (n, heads, t, d/heads)
    n, t, d = x.shape
    return x.view(n, t, heads, d // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:  # (n, heads, t, dh) → (n, t, heads·dh)
    n, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(n, t, h * dh)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """The eager attention of transformers' BLIP text model, operation for operation."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return torch.matmul(scores.softmax(dim=-1), v)


class BlipDecoder:
    """Captions for a batch of pixel values; one object per model and generation settings."""

    def __init__(
        self, model: Any, num_beams: int, max_length: int, min_length: int, search: str = "transformers"
    ) -> None:
        if search not in ("transformers", "lavis"):
            raise ValueError(f"search must be 'transformers' or 'lavis', not {search!r}")
        self.search = search
        self.model = model
        self.text = model.text_decoder
        tc = model.config.text_config
        self.heads = tc.num_attention_heads
        self.bos, self.eos, self.pad = tc.bos_token_id, tc.sep_token_id, tc.pad_token_id
        self.beams, self.max_length, self.min_length = num_beams, max_length, min_length
        gc = self.text.generation_config
        self.length_penalty = float(gc.length_penalty if gc.length_penalty is not None else 1.0)
        # exact speed-ups, on by default; off only to measure them against the path before
        # (benchmarks/gpu_check.py): the cross-attention keys and values laid out contiguously once
        # (their transposed view made every step copy them, in every layer), and only the live
        # prefix of the self-attention cache reordered between steps (not all max_length slots)
        self.contiguous_cross = True
        self.prefix_reorder = True
        self._spare: list[list[Tensor]] = []

    @torch.inference_mode()
    def generate(self, pixel_values: Tensor, prompt: Tensor) -> Tensor:
        """pixel_values (B, 3, s, s); prompt: the tokenised prompt, (p + 1,) with its trailing
        separator, as `BlipForConditionalGeneration.generate` takes it. Returns (B, length) ids,
        the prompt included, padded as `generate` pads."""
        image = self.model.vision_model(pixel_values=pixel_values)[0]
        ids = prompt[:-1].clone()  # generate drops the trailing [SEP] and starts with [DEC]
        ids[0] = self.bos
        b = image.shape[0]
        cross = []
        for layer in self.text.bert.encoder.layer:
            ca = layer.crossattention.self
            k, v = _split(ca.key(image), self.heads), _split(ca.value(image), self.heads)
            cross.append((k.contiguous(), v.contiguous()) if self.contiguous_cross else (k, v))
        prompt_ids = ids.to(image.device).expand(b, -1)
        if self.beams == 1:
            return self._greedy(prompt_ids, cross)
        if self.search == "lavis":
            return self._beam_lavis(prompt_ids, cross)
        return self._beam(prompt_ids, cross)

    def _cache(self, rows: int, like: Tensor) -> list[list[Tensor]]:
        d = self.text.config.hidden_size // self.heads
        shape = (rows, self.heads, self.max_length, d)
        return [[like.new_empty(shape), like.new_empty(shape)] for _ in self.text.bert.encoder.layer]

    def _step(
        self, ids: Tensor, start: int, cache: list[list[Tensor]], cross: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """Logits (rows, vocab) of the last position after feeding ids (rows, t) at positions
        start.. start+t; rows = images × beams, beams of an image adjacent."""
        emb = self.text.bert.embeddings
        rows, t = ids.shape
        pos = emb.position_ids[:, start : start + t]
        h = emb.LayerNorm(emb.word_embeddings(ids) + emb.position_embeddings(pos))
        mask = None
        if t > 1:  # the prompt: causal within itself
            mask = torch.full((t, t), torch.finfo(h.dtype).min, device=h.device, dtype=h.dtype).triu(1)
        images = cross[0][0].shape[0]
        per = rows // images
        for layer, (kc, vc), (ck, cv) in zip(self.text.bert.encoder.layer, cache, cross, strict=True):
            sa = layer.attention.self
            kc[:, :, start : start + t] = _split(sa.key(h), self.heads)
            vc[:, :, start : start + t] = _split(sa.value(h), self.heads)
            a = _attend(_split(sa.query(h), self.heads), kc[:, :, : start + t], vc[:, :, : start + t], mask)
            h = layer.attention.output(_merge(a), h)
            q = _split(layer.crossattention.self.query(h), self.heads)  # (rows, H, t, dh)
            dh = q.shape[-1]
            q = (
                q.view(images, per, self.heads, t, dh)
                .transpose(1, 2)
                .reshape(images, self.heads, per * t, dh)
            )
            a = _attend(q, ck, cv).view(images, self.heads, per, t, dh).transpose(1, 2)
            h = layer.crossattention.output(_merge(a.reshape(rows, self.heads, t, dh)), h)
            h = layer.output(layer.intermediate(h), h)
        logits: Tensor = self.text.cls(h[:, -1:])[:, 0]
        return logits.float()

    def _min_length(self, scores: Tensor, cur_len: int) -> Tensor:
        if cur_len < self.min_length:
            scores[..., self.eos] = -math.inf
        return scores

    def _greedy(self, ids: Tensor, cross: list[tuple[Tensor, Tensor]]) -> Tensor:
        b, p = ids.shape
        cache = self._cache(b, cross[0][0])
        out = [ids]
        unfinished = torch.ones(b, dtype=torch.bool, device=ids.device)
        logits = self._step(ids, 0, cache, cross)
        cur_len = p
        while True:
            token = self._min_length(logits, cur_len).argmax(-1)
            token = torch.where(unfinished, token, self.pad)
            out.append(token[:, None])
            cur_len += 1
            unfinished &= token != self.eos
            if cur_len >= self.max_length or not bool(unfinished.any()):
                return torch.cat(out, dim=1)
            logits = self._step(token[:, None], cur_len - 1, cache, cross)

    def _prefill(self, ids: Tensor, cross: list[tuple[Tensor, Tensor]]) -> tuple[list[list[Tensor]], Tensor]:
        """The prompt once per image, its cache copied to the image's beams; (cache, log-probs
        (b, beams, vocab) of the first generated token)."""
        b, p = ids.shape
        one = self._cache(b, cross[0][0])
        logits = self._step(ids, 0, one, cross)
        cache = [[t.repeat_interleave(self.beams, dim=0) for t in kv] for kv in one]
        if self.prefix_reorder:  # the other half of the cache's double buffer
            self._spare = [[torch.empty_like(t) for t in kv] for kv in cache]
        return cache, self._min_length(logits.log_softmax(-1), p)[:, None].expand(b, self.beams, -1)

    def _continuations(
        self, log_probs: Tensor, running: Tensor, running_scores: Tensor, cur_len: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The top 2·beams continuations of all beams: (scores, source beam, token, sequences)."""
        b, r, vocab = log_probs.shape
        flat = (log_probs + running_scores[:, :, None]).reshape(b, -1)
        top_scores, top_index = torch.topk(flat, 2 * r)
        src = top_index // vocab  # the beam each continuation extends
        tokens = top_index % vocab
        cand = running.gather(1, src[:, :, None].expand(-1, -1, running.shape[-1]))
        cand[:, :, cur_len] = tokens  # gather made a new tensor: running is untouched
        return top_scores, src, tokens, cand

    def _advance(
        self,
        cache: list[list[Tensor]],
        running: Tensor,
        beam_src: Tensor,
        cur_len: int,
        cross: list[tuple[Tensor, Tensor]],
    ) -> tuple[list[list[Tensor]], Tensor]:
        """Reorder the self-attention cache to the surviving beams and run the next step."""
        b, r = beam_src.shape
        rows = (beam_src + torch.arange(b, device=beam_src.device)[:, None] * r).reshape(-1)
        if self.prefix_reorder:  # positions < cur_len - 1 are written (the step writes the next):
            live = cur_len - 1  # gathered into the spare cache, which becomes the cache
            spare = self._spare
            for kv, into in zip(cache, spare, strict=True):
                for t, o in zip(kv, into, strict=True):
                    torch.index_select(t[:, :, :live], 0, rows, out=o[:, :, :live])
            self._spare, cache = cache, spare
        else:
            cache = [[t.index_select(0, rows) for t in kv] for kv in cache]
        logits = self._step(running[:, :, cur_len - 1].reshape(-1, 1), cur_len - 1, cache, cross)
        return cache, self._min_length(logits.log_softmax(-1), cur_len).view(b, r, -1)

    def _beam(self, ids: Tensor, cross: list[tuple[Tensor, Tensor]]) -> Tensor:
        b, p = ids.shape
        r, dev, length = self.beams, ids.device, self.max_length
        keep = 2 * r
        fill = self.pad if self.pad else self.eos  # as generate fills (`pad or eos`)
        running = torch.full((b, r, length), fill, dtype=torch.long, device=dev)
        running[:, :, :p] = ids[:, None]
        sequences = running.clone()
        running_scores = torch.zeros((b, r), device=dev)
        running_scores[:, 1:] = NEG
        scores = torch.full((b, r), NEG, device=dev)
        lengths = torch.zeros((b, r), dtype=torch.long, device=dev)  # generated tokens, EOS included
        finished = torch.zeros((b, r), dtype=torch.bool, device=dev)
        improvable = torch.ones((b, 1), dtype=torch.bool, device=dev)
        top_r = torch.arange(keep, device=dev) < r

        cache, log_probs = self._prefill(ids, cross)
        cur_len = p
        while True:
            top_scores, src, tokens, cand = self._continuations(log_probs, running, running_scores, cur_len)
            hits = (tokens == self.eos) | (cur_len + 1 >= length)

            # the running beams for the next step: the best continuations that did not finish
            alive = top_scores + hits.float() * NEG
            nxt = torch.topk(alive, r)[1]
            running = cand.gather(1, nxt[:, :, None].expand(-1, -1, length))
            running_scores = alive.gather(1, nxt)
            beam_src = src.gather(1, nxt)

            # finished hypotheses: merge the ones just ended (among the top r) with those kept
            just = hits & top_r[None]
            normed = top_scores / ((cur_len + 1 - p) ** self.length_penalty)
            normed = normed + (~improvable).float() * NEG + (~just).float() * NEG
            all_scores = torch.cat([scores, normed], dim=1)
            best = torch.topk(all_scores, r)[1]
            sequences = torch.cat([sequences, cand], dim=1).gather(1, best[:, :, None].expand(-1, -1, length))
            scores = all_scores.gather(1, best)
            new_len = torch.full_like(tokens, cur_len + 1 - p)
            lengths = torch.cat([lengths, new_len], dim=1).gather(1, best)
            finished = torch.cat([finished, just], dim=1).gather(1, best)

            cur_len += 1
            worst = torch.where(finished, scores.min(dim=1, keepdim=True)[0], NEG)
            best_running = running_scores[:, :1] / ((cur_len - p) ** self.length_penalty)
            improvable = improvable & (best_running > worst).any(dim=-1, keepdim=True)
            if not bool(improvable.any()) or bool(hits.all()):
                break
            cache, log_probs = self._advance(cache, running, beam_src, cur_len, cross)
        return sequences[:, 0, : p + int(lengths[:, 0].max())]

    def _beam_lavis(self, ids: Tensor, cross: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The beam search of transformers 4.26, which LAVIS (and so the paper) ran: a finished
        hypothesis is scored over its whole length before EOS, prompt included; an image is done
        once its worst kept hypothesis beats the best candidate of the step, scored the same way;
        at max_length the open beams join the finished ones; outputs are padded with pad."""
        b, p = ids.shape
        r, dev, length, lp = self.beams, ids.device, self.max_length, self.length_penalty
        keep = 2 * r
        running = torch.full((b, r, length), self.pad, dtype=torch.long, device=dev)
        running[:, :, :p] = ids[:, None]
        hyps = running.clone()
        running_scores = torch.zeros((b, r), device=dev)
        running_scores[:, 1:] = NEG
        hyp_scores = torch.full((b, r), -math.inf, device=dev)  # -inf: an empty slot
        hyp_lengths = torch.zeros((b, r), dtype=torch.long, device=dev)  # EOS included
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        top_r = torch.arange(keep, device=dev) < r

        cache, log_probs = self._prefill(ids, cross)
        cur_len = p
        while True:
            top_scores, src, tokens, cand = self._continuations(log_probs, running, running_scores, cur_len)
            is_eos = tokens == self.eos

            add = is_eos & top_r[None] & ~done[:, None]
            normed = torch.where(add, top_scores / cur_len**lp, -math.inf)
            merged = torch.cat([hyp_scores, normed], dim=1)
            best = torch.topk(merged, r)[1]
            hyps = torch.cat([hyps, cand], dim=1).gather(1, best[:, :, None].expand(-1, -1, length))
            hyp_scores = merged.gather(1, best)
            hyp_lengths = torch.cat([hyp_lengths, torch.full_like(tokens, cur_len + 1)], dim=1).gather(
                1, best
            )

            nxt = torch.topk(top_scores + is_eos.float() * NEG, r)[1]  # the first r that go on
            running = cand.gather(1, nxt[:, :, None].expand(-1, -1, length))
            running_scores = top_scores.gather(1, nxt)
            beam_src = src.gather(1, nxt)

            full = torch.isfinite(hyp_scores).all(dim=1)
            done |= full & (hyp_scores.min(dim=1)[0] >= top_scores[:, 0] / cur_len**lp)
            cur_len += 1
            if bool(done.all()) or cur_len >= length:
                break
            cache, log_probs = self._advance(cache, running, beam_src, cur_len, cross)

        # finalize: images not done take their open beams (scored over cur_len tokens) as well
        final = torch.where(done[:, None], -math.inf, running_scores / cur_len**lp)
        merged = torch.cat([hyp_scores, final], dim=1)
        best = torch.topk(merged, 1)[1]
        seqs = torch.cat([hyps, running], dim=1).gather(1, best[:, :, None].expand(-1, -1, length))[:, 0]
        lens = torch.cat([hyp_lengths, torch.full_like(hyp_lengths, cur_len)], dim=1).gather(1, best)[:, 0]
        return seqs[:, : int(lens.max())]
