"""Train ``shapes-llava`` from scratch on the synthetic shapes VQA (CPU, seeded, reproducible).

The shipped weights (``tokensel/zoo/weights/shapes-llava``) come from::

    OMP_NUM_THREADS=2 python experiments/train_shapes_llava.py --recipe shipped --threads 2 --out <folder>

which runs the two stages of ``SHIPPED_STAGES`` one after the other (stage 1 into
``<out>-stage1``). Stage 1: phase 0 trains the vision side alone (``--vision-steps``), then the
whole model trains on a token-subset curriculum; stage 2 starts from stage 1 with the counting
hints. Each step's loss is the answer cross-entropy plus training-only terms (patch/word
alignment, question probe, retrieval and counting attention hints, centre and size probes);
only the LLaVA weights are saved. Validation (all 576 tokens) runs every ``--eval-every`` steps
and each evaluation saves the weights and ``training_info.json``.

Determinism: a fixed ``--seed`` fixes initialisation, data order and schedule; a rerun with the
same thread count gives the same weights up to floating-point reduction order.

The losses in detail, the recipes compared and what was tried: docs/training-shapes-llava.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tokensel.zoo.integrity import tensor_digest, write_manifest  # noqa: E402
from tokensel.zoo.shapes import (  # noqa: E402
    COLORS,
    GRID,
    MAX_COUNT,
    SHAPES,
    VQARecord,
    answer_vocabulary,
    count_question,
    generate_split,
    make_questions,
    patch_labels,
    sample_scene,
    scene_seed,
)
from tokensel.zoo.shapes_llava import (  # noqa: E402
    CLIP_MEAN,
    CLIP_STD,
    build_config,
    build_model,
    build_processor,
    build_tokenizer,
    format_prompt,
)

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def to_pixels(image) -> torch.Tensor:
    """Same result as the CLIP processor for a 336 x 336 RGB image (checked in tests)."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (arr - MEAN) / STD


class SceneStream(torch.utils.data.IterableDataset):
    """Train scenes ``start, start+1, ...`` rendered with their questions and patch targets."""

    def __init__(self, tokenizer, seed: int, start: int, count: int, extra_counts: int = 0):
        self.tok = tokenizer
        self.seed, self.start, self.count = seed, start, count
        self.extra_counts = extra_counts
        self.color_ids = [COLORS_LIST.index(c) for c in COLORS_LIST]

    def __iter__(self):
        for i in range(self.start, self.start + self.count):
            scene = sample_scene(scene_seed("train", i, self.seed), index=i, image_id=str(i))
            recs = make_questions(scene)
            if self.extra_counts:
                recs += extra_count_questions(scene, self.extra_counts)
            labels = patch_labels(scene)
            colour_t = np.zeros((GRID * GRID, len(COLORS_LIST)), dtype=np.float32)
            shape_t = np.zeros((GRID * GRID, len(SHAPES)), dtype=np.float32)
            centre = np.zeros(GRID * GRID, dtype=np.float32)
            logsize = np.zeros(GRID * GRID, dtype=np.float32)  # log of the patch count of the patch's object
            for j, o in enumerate(scene.objects):
                m = labels == j + 1
                logsize[m] = np.log(max(int(m.sum()), 1))
                colour_t[m, COLORS_LIST.index(o.color)] = 1
                shape_t[m, SHAPES.index(o.shape)] = 1
                centre[min(o.cy // 14, GRID - 1) * GRID + min(o.cx // 14, GRID - 1)] = 1
            rel = np.stack([relevant_patches(scene, r, labels) for r in recs])
            prompts = [self.tok(format_prompt(r.question))["input_ids"] for r in recs]
            answers = [self.tok.convert_tokens_to_ids(r.answer) for r in recs]
            yield {
                "pixels": to_pixels(scene.image),
                "colour_t": torch.from_numpy(colour_t),
                "shape_t": torch.from_numpy(shape_t),
                "centre": torch.from_numpy(centre),
                "prompts": prompts,
                "answers": answers,
                "categories": [r.category for r in recs],
                "q_targets": torch.tensor([question_targets(r.question) for r in recs]),
                "relevant": torch.from_numpy(rel),
                "labels": torch.from_numpy(labels),
                "logsize": torch.from_numpy(logsize),
            }


COLORS_LIST = list(COLORS)


def extra_count_questions(scene, limit: int) -> list:
    """Up to ``limit`` more counting questions about the same image (training only; the
    evaluation splits keep one per scene): every colour and shape the scene holds 1..MAX_COUNT
    times, in a seeded random order, and one absent colour or shape. The image's 576 tokens run
    through the LM once per step whatever the number of questions, so these are cheap, and the
    counting hint gets several counted sets per image instead of one."""
    rng = np.random.default_rng(scene.seed + 17)
    asked = scene.count_target
    present, absent = [], []
    for kind, values in (("color", COLORS_LIST), ("shape", list(SHAPES))):
        for v in values:
            if (kind, v) == asked:
                continue
            n = sum((o.color if kind == "color" else o.shape) == v for o in scene.objects)
            if n == 0:
                absent.append((kind, v, n))
            elif n <= MAX_COUNT:  # larger counts have no answer word
                present.append((kind, v, n))
    order = [present[i] for i in rng.permutation(len(present))]
    if absent:
        order.append(absent[int(rng.integers(len(absent)))])
    out = []
    for kind, v, n in order[:limit]:
        out.append(VQARecord(image=None, question=count_question(kind, v), answer=str(n), category="count", pope_mode=None,
                             image_id=scene.image_id, question_id=f"{scene.image_id}-x{len(out)}", scene=scene))
    return out


def collate(items):
    return items


def build_text_batch(items, tok, image_id: int):
    """Shared prefix ids (one image token) and left-padded suffixes (question + answer + </s>)."""
    prefix = None
    rows, img_idx, ans = [], [], []
    for b, it in enumerate(items):
        for p, a in zip(it["prompts"], it["answers"]):
            cut = p.index(image_id) + 1
            if prefix is None:
                prefix = p[:cut]
            assert p[:cut] == prefix, "all prompts must share the '<s> USER: <image>' prefix"
            rows.append(p[cut:] + [a, tok.eos_token_id])
            img_idx.append(b)
            ans.append(a)
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = torch.tensor(r)
        mask[i, L - len(r):] = 1
    return torch.tensor(prefix), ids, mask, torch.tensor(img_idx), torch.tensor(ans)


def vision_features(model, pixels):
    """``hidden_states[vision_feature_layer]`` of the CLIP tower without CLS, computing only the
    layers up to the feature layer (later layers do not affect the LLaVA output, so training
    skips them; they keep their initialisation, like an unused CLIP last layer)."""
    tower = model.model.vision_tower
    layers = tower.encoder.layers
    n_used = len(layers) + 1 + model.config.vision_feature_layer
    with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in tower.parameters())):
        h = tower.pre_layrnorm(tower.embeddings(pixels))
        for layer in layers[:n_used]:
            h = layer(h, None)
    return h[:, 1:]


def subset_tokens(items, k: int, gen: torch.Generator) -> torch.Tensor:
    """[B, k] sorted patch indices: every object patch (a random k of them if more), then
    random background patches up to k. Used in the first training phase only."""
    rows = []
    for it in items:
        obj = it["colour_t"].amax(-1) > 0
        o_idx, b_idx = obj.nonzero().squeeze(-1), (~obj).nonzero().squeeze(-1)
        o_idx = o_idx[torch.randperm(len(o_idx), generator=gen)[:k]]
        b_idx = b_idx[torch.randperm(len(b_idx), generator=gen)[: k - len(o_idx)]]
        rows.append(torch.cat([o_idx, b_idx]).sort().values)
    return torch.stack(rows)


def relevant_patches(scene, rec, labels) -> np.ndarray:
    """[576] bool: patches of the objects a question is about (colour or shape named in it)."""
    words = rec.question.lower().rstrip("?").split()
    singular = {s + "s": s for s in SHAPES}
    words = [singular.get(w, w) for w in words]
    ids = [i + 1 for i, o in enumerate(scene.objects) if o.color in words or o.shape in words]
    return np.isin(labels, ids)


def question_targets(question: str) -> list[int]:
    """(colour word or none, shape word or none, question type) of a question, as class ids."""
    words = question.lower().rstrip("?").split()
    c = next((COLORS_LIST.index(w) for w in words if w in COLORS_LIST), len(COLORS_LIST))
    singular = {s + "s": s for s in SHAPES}
    s = next((SHAPES.index(singular.get(w, w)) for w in words if singular.get(w, w) in SHAPES), len(SHAPES))
    kind = 0 if words[0] == "is" else 1 if words[0] == "what" else 2
    return [c, s, kind]


def vision_losses(model, probe, align, items, word_ids, size_weight: float = 0.0):
    """Projected patch tokens ``[B, 576, D]`` and the two vision-side losses (alignment, centre;
    with ``size_weight`` the centre term also holds the object-size regression)."""
    pixels = torch.stack([it["pixels"] for it in items])
    feats = vision_features(model, pixels)  # [B, 576, dv]
    x = model.model.multi_modal_projector(feats)  # [B, 576, D]

    # alignment: projected patches vs colour/shape word embeddings
    emb = model.get_input_embeddings()
    words = F.normalize(emb(word_ids), dim=-1)  # [10, D]
    xn = F.normalize(x, dim=-1)
    logits = align[0] * xn @ words.T + align[1]  # [B, 576, 10]
    target = torch.cat(
        [torch.stack([it["colour_t"] for it in items]), torch.stack([it["shape_t"] for it in items])], dim=-1
    )
    weight = 1.0 + 4.0 * target.amax(-1, keepdim=True)  # object patches count more
    align_loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight)

    centre_t = torch.stack([it["centre"] for it in items])
    out = probe(feats)
    centre_logits = out[..., 0]
    centre_loss = F.binary_cross_entropy_with_logits(centre_logits, centre_t, pos_weight=torch.tensor(20.0))
    if size_weight:
        # the probe's second output regresses log(number of patches of the object) on object patches
        logsize = torch.stack([it["logsize"] for it in items])
        on = logsize > 0
        if bool(on.any()):
            centre_loss = centre_loss + size_weight * (out[..., 1] - logsize)[on].pow(2).mean()
    return x, align_loss, centre_loss


def forward_losses(model, probe, align, items, tok, image_id, word_ids, keep=None, qprobe=None, count_weight=0.0,
                   count_ratio=0.0, count_log_weight=0.0, count_per_object=False, size_weight=0.0,
                   retrieval_from=-1):
    x, align_loss, centre_loss = vision_losses(model, probe, align, items, word_ids, size_weight)
    emb = model.get_input_embeddings()
    # answers: the prefix "<s> user : <image>*576" is shared by all questions of an image, so it
    # runs once per image; each question's suffix then attends to the cached prefix (same
    # result as running the full sequence, about 4x cheaper).
    prefix_ids, suffix_ids, suffix_mask, img_idx, answers = build_text_batch(items, tok, image_id)
    B, n_img = x.shape[0], x.shape[1]
    pre = emb(prefix_ids).unsqueeze(0).expand(B, -1, -1)
    img_pos = (prefix_ids == image_id).nonzero().squeeze(-1)
    start = int(img_pos[0])
    if keep is None:
        keep = torch.arange(n_img).expand(B, -1)
    x_lm = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    pre = torch.cat([pre[:, :start], x_lm, pre[:, img_pos[-1] + 1 :]], dim=1)
    after = prefix_ids.shape[0] - int(img_pos[-1]) - 1
    # original positions: kept image tokens keep theirs, so RoPE sees the full-token layout
    pre_pos = torch.cat([
        torch.arange(start).expand(B, -1),
        start + keep,
        start + n_img + torch.arange(after).expand(B, -1),
    ], dim=1)
    P_full = start + n_img + after
    P = pre.shape[1]
    lm = model.model.language_model
    out = lm(inputs_embeds=pre, position_ids=pre_pos, use_cache=True)
    cache = out.past_key_values
    cache.reorder_cache(img_idx)
    mask = torch.cat([torch.ones(len(img_idx), P, dtype=torch.long), suffix_mask], dim=1)
    position_ids = P_full + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
    out = lm(inputs_embeds=emb(suffix_ids), attention_mask=mask, position_ids=position_ids, past_key_values=cache,
             use_cache=True, output_hidden_states=True, output_attentions=True)
    h = out.last_hidden_state[:, -3:-1]  # predicts the answer, then </s>
    lm_logits = model.lm_head(h)
    targets = torch.stack([answers, torch.full_like(answers, tok.eos_token_id)], dim=1)
    ans_loss = F.cross_entropy(lm_logits.reshape(-1, lm_logits.shape[-1]), targets.reshape(-1))
    acc = (lm_logits[:, 0].argmax(-1) == answers).float().mean()
    # question probe: after the first decoder layer, the answer position must already hold the
    # question's colour / shape word and question type (breaks the two-hop plateau where the
    # model answers from the image alone)
    h1 = out.hidden_states[1][:, -3]
    q_t = torch.cat([it["q_targets"] for it in items])  # [N, 3]
    ql = qprobe(h1)
    nc, ns = len(COLORS_LIST) + 1, len(SHAPES) + 1
    q_loss = (F.cross_entropy(ql[:, :nc], q_t[:, 0]) + F.cross_entropy(ql[:, nc:nc + ns], q_t[:, 1])
              + F.cross_entropy(ql[:, nc + ns:], q_t[:, 2]))
    # retrieval hint: head 0 of the last layer, at the answer position, should put its image
    # attention on the objects the question names (when there are any)
    rel = torch.cat([it["relevant"] for it in items])  # [N, 576]
    rel_kept = torch.gather(rel, 1, keep[img_idx])
    att_loss = retrieval_hint_loss(out.attentions[retrieval_from:], rel_kept, start)
    if count_weight:
        att_loss = att_loss + count_weight * count_hint_loss(
            out.attentions[-1][:, 1, -3], items, rel_kept, keep, img_idx, start, count_ratio, count_log_weight,
            count_per_object)
    return ans_loss, align_loss, centre_loss, acc, q_loss + att_loss


def retrieval_hint_loss(attentions, rel_kept, start: int) -> torch.Tensor:
    """Retrieval hint: head 0 of each layer in ``attentions`` (``[N, heads, q, kv]`` each, the
    answer position is query ``-3``) should put its image attention on the patches of the
    objects the question names (``rel_kept``: ``[N, kept]`` bool); mean over the layers of
    ``-log`` of that share, over the questions that name a present object."""
    valid = rel_kept.any(-1)
    losses = []
    for layer_att in attentions:
        att = layer_att[:, 0, -3, start:start + rel_kept.shape[1]]
        mass = (att * rel_kept).sum(-1) / att.sum(-1).clamp(min=1e-6)
        losses.append(-torch.log(mass[valid] + 1e-4).mean() if valid.any() else att.sum() * 0)
    return torch.stack(losses).mean()


def count_hint_loss(att, items, rel_kept, keep, img_idx, start, ratio: float = 0.0, log_weight: float = 0.0,
                    per_object: bool = False) -> torch.Tensor:
    """Counting hint for one head (``att``: ``[N, kv]``, its attention at the answer position):
    on a count question it should put a share of its mass on the centre patch of each counted
    object and the rest on ``<s>``, so its output moves with the count (softmax attention alone
    normalises the count away). Cross-entropy to that distribution.

    ``ratio = 0``: a share of 1 / (MAX_COUNT + 1) per centre (linear in the count, which a
    softmax with one fixed score gap cannot produce for every count). ``ratio = r > 0``: the
    softmax-consistent target, r / (1 + c r) per centre and 1 / (1 + c r) on ``<s>`` for ``c``
    counted objects: one fixed score gap log r fits every count exactly.

    ``log_weight``: adds the squared error of each counted centre's log attention against its
    target share. The cross-entropy alone tolerates a spread of the per-object masses (each
    small mass has a small gradient), and that spread is what blurs counts of 2, 3 and 4.

    ``per_object``: the share belongs to each counted object's patches taken together (the head
    may spread it inside the object) instead of its centre patch; needs ``ratio > 0``."""
    is_count = torch.tensor([c == "count" for it in items for c in it["categories"]])
    if not bool(is_count.any()):
        return att.sum() * 0
    if per_object:
        labels = torch.gather(torch.stack([it["labels"] for it in items]), 1, keep)[img_idx]  # [N, kept]
        ids = torch.arange(1, int(labels.max()) + 2)
        member = (labels[:, :, None] == ids) & rel_kept[:, :, None]  # [N, kept, O]: counted objects
        present = member.any(1)  # [N, O]
        c = present.sum(-1, keepdim=True).float()
        img_att = att[:, start:start + keep.shape[1]]
        mass = torch.einsum("nk,nko->no", img_att, member.float())  # [N, O]
        share = ratio / (1.0 + ratio * c)
        ce = -(present * share * torch.log(mass + 1e-6)).sum(-1) - torch.log(att[:, 0] + 1e-6) / (1.0 + ratio * c[:, 0])
        loss = ce[is_count].mean()
        if log_weight:
            on = present & is_count[:, None]
            if bool(on.any()):
                err = torch.log(mass + 1e-6) - torch.log(share.expand_as(mass))
                loss = loss + log_weight * err[on].pow(2).mean()
        return loss
    centre = torch.stack([it["centre"] for it in items]) > 0  # [B, 576]
    centres = torch.gather(centre, 1, keep)[img_idx] & rel_kept  # [N, kept]: counted objects' centres
    if ratio > 0:
        share = ratio / (1.0 + ratio * centres.sum(-1, keepdim=True).float())
    else:
        share = 1.0 / (MAX_COUNT + 1)
    target = torch.zeros_like(att)
    target[:, start:start + keep.shape[1]] = centres.float() * share
    target[:, 0] = 1.0 - target.sum(-1)
    ce = -(target * torch.log(att + 1e-6)).sum(-1)
    loss = ce[is_count].mean()
    if log_weight:
        on = torch.zeros_like(att, dtype=torch.bool)
        on[:, start:start + keep.shape[1]] = centres
        on &= is_count[:, None]
        if bool(on.any()):
            err = torch.log(att + 1e-6) - torch.log(target + 1e-6)
            loss = loss + log_weight * err[on].pow(2).mean()
    return loss


@torch.no_grad()
def patch_word_accuracy(model, tok, scenes) -> dict:
    """How well the projected patch tokens name what they show: over the patches an object
    covers, the fraction whose most similar colour word (cosine with the LM's input embedding)
    is the object's colour, and likewise for its shape word. The answer accuracy is bounded by
    these: a question about a shape the vision side cannot tell apart cannot be answered."""
    was_training = model.training
    model.eval()
    words = F.normalize(model.get_input_embeddings()(
        torch.tensor(tok.convert_tokens_to_ids(COLORS_LIST + list(SHAPES)))), dim=-1)
    pixels = torch.stack([to_pixels(sc.image) for sc in scenes])
    sims = F.normalize(model.model.multi_modal_projector(vision_features(model, pixels)), dim=-1) @ words.T
    hit_c = hit_s = total = 0
    for sc, sim in zip(scenes, sims):
        labels = torch.from_numpy(patch_labels(sc))
        for j, o in enumerate(sc.objects):
            on = labels == j + 1
            hit_c += int((sim[on, : len(COLORS_LIST)].argmax(-1) == COLORS_LIST.index(o.color)).sum())
            hit_s += int((sim[on, len(COLORS_LIST):].argmax(-1) == SHAPES.index(o.shape)).sum())
            total += int(on.sum())
    model.train(was_training)
    return {"patch_colour": hit_c / max(total, 1), "patch_shape": hit_s / max(total, 1)}


@torch.no_grad()
def evaluate(model, processor, records, batch_size: int = 16) -> dict:
    """Accuracy by comparing the logits of the category's candidate answer words."""
    model.eval()
    tok = processor.tokenizer
    correct = {}
    total = {}
    for s in range(0, len(records), batch_size):
        chunk = records[s : s + batch_size]
        enc = processor(
            images=[r.image for r in chunk], text=[format_prompt(r.question) for r in chunk],
            return_tensors="pt", padding=True,
        )
        logits = model(**enc).logits[:, -1]
        for r, lg in zip(chunk, logits):
            cands = answer_vocabulary(r.category)
            ids = tok.convert_tokens_to_ids(list(cands))
            pred = cands[int(lg[ids].argmax())]
            correct[r.category] = correct.get(r.category, 0) + (pred == r.answer)
            total[r.category] = total.get(r.category, 0) + 1
    model.train()
    res = {c: correct[c] / total[c] for c in total}
    res["all"] = sum(correct.values()) / sum(total.values())
    scenes = list({r.image_id: r.scene for r in records}.values())[:20]
    res.update(patch_word_accuracy(model, tok, scenes))
    return res


# The runs that produced the shipped weights (``--recipe shipped`` runs them in turn).
SHIPPED_STAGES: tuple[tuple[str, ...], ...] = (
    ("--local-init", "--vision-steps", "1200", "--vision-scenes", "16", "--steps", "1800",
     "--subset-fraction", "0.6", "--eval-every", "300"),
    ("--data-start", "33600", "--steps", "1200", "--subset-fraction", "0.4", "--warmup", "20", "--lr", "1.5e-3",
     "--count-weight", "1.0", "--count-ratio", "1.0", "--count-log-weight", "2.0", "--count-per-object",
     "--size-weight", "2.0", "--vision-lr-scale", "0.5", "--extra-counts", "6", "--eval-every", "300"),
)


def run_shipped_recipe(out: str, threads: int, seed: int) -> int:
    """Stage s < last into ``<out>-stage<s>``, each from the one before; the last into ``out``."""
    common = ("--threads", str(threads), "--seed", str(seed))
    previous: tuple[str, ...] = ()
    for s, stage in enumerate(SHIPPED_STAGES, start=1):
        target = out if s == len(SHIPPED_STAGES) else f"{out.rstrip('/')}-stage{s}"
        if main([*stage, *common, *previous, "--out", target]):
            return 1
        previous = ("--init-from", target)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", choices=("shipped",), default=None,
                    help="run the two stages that trained the shipped weights (takes only --out, --threads "
                         "and --seed besides)")
    ap.add_argument("--out", default=str(ROOT / "tokensel/zoo/weights/shapes-llava"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--scenes", type=int, default=8, help="images per step (about 4 questions each)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--decay-fraction", type=float, default=0.25)
    ap.add_argument("--subset-tokens", type=int, default=96,
                    help="phase 1: the LM sees every object patch plus random background patches, this many per image")
    ap.add_argument("--subset-fraction", type=float, default=0.75,
                    help="fraction of the steps in phase 1; the rest (the LR decay) sees all 576 tokens")
    ap.add_argument("--align-weight", type=float, default=1.0)
    ap.add_argument("--centre-weight", type=float, default=0.5)
    ap.add_argument("--q-weight", type=float, default=0.5, help="weight of the question probe after LM layer 1")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-images", type=int, default=60)
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop (and save) after this many steps; the schedule still assumes --steps")
    ap.add_argument("--init-from", default="", help="continue from saved weights (a second stage)")
    ap.add_argument("--data-start", type=int, default=0, help="index of the first training scene")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--workers", type=int, default=1, help="data-rendering worker processes")
    ap.add_argument("--time-steps", type=int, default=0, help="only time this many steps and exit")
    ap.add_argument("--vision-steps", type=int, default=0,
                    help="phase 0: steps that train only the vision side (alignment and centre losses, no LM)")
    ap.add_argument("--vision-scenes", type=int, default=16, help="images per phase-0 step")
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--count-weight", type=float, default=0.0,
                    help="weight of the counting hint (head 1 of the last LM layer, see count_hint_loss)")
    ap.add_argument("--count-ratio", type=float, default=0.0,
                    help="0: share 1/(MAX_COUNT+1) per counted centre; r > 0: softmax-consistent "
                         "share r/(1+c r) (see count_hint_loss)")
    ap.add_argument("--count-log-weight", type=float, default=0.0,
                    help="weight of the squared log-attention error per counted centre (see count_hint_loss)")
    ap.add_argument("--count-per-object", action="store_true",
                    help="the counting share goes to each counted object's patches together (needs --count-ratio > 0)")
    ap.add_argument("--size-weight", type=float, default=0.0,
                    help="weight of the object-size regression (log patch count) by the centre probe's second output")
    ap.add_argument("--vision-lr-scale", type=float, default=1.0,
                    help="learning-rate multiplier of the vision tower in the main phase")
    ap.add_argument("--extra-counts", type=int, default=0,
                    help="main phase: up to this many more counting questions per training image")
    ap.add_argument("--text-layers", type=int, default=0,
                    help="with --init-from: grow the language model to this many decoder layers "
                         "(see grow_text_layers); 0 keeps the loaded depth")
    ap.add_argument("--freeze-vision", action="store_true",
                    help="the vision tower, projector and token embeddings do not train (saved byte-identical: "
                         "the pre-LLM selectors' inputs stay the same)")
    ap.add_argument("--retrieval-from", type=int, default=-1,
                    help="the retrieval hint trains head 0 of every LM layer from this index (-1: the last only)")
    ap.add_argument("--local-init", action="store_true",
                    help="initialise the first vision layers' heads to attend to neighbouring patches")
    return ap


def main_optimizer(model, params: list, args) -> torch.optim.AdamW:
    """AdamW over ``params``: weight decay on matrices only; the vision tower's groups carry the
    learning-rate multiplier ``--vision-lr-scale`` (as ``"scale"``)."""
    tower = {id(p) for p in model.model.vision_tower.parameters()}
    groups = []
    for in_tower, scale in ((False, 1.0), (True, args.vision_lr_scale)):
        mine = [p for p in params if (id(p) in tower) == in_tower]
        if not mine:  # a frozen tower has no group
            continue
        groups += [{"params": [p for p in mine if p.dim() >= 2], "weight_decay": 0.01, "scale": scale},
                   {"params": [p for p in mine if p.dim() < 2], "weight_decay": 0.0, "scale": scale}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))


def main_lr(args, step: int) -> float:
    """Main-phase learning rate: linear warm-up, constant, cosine decay over the last
    ``--decay-fraction`` of the steps (down to 2% of ``--lr``)."""
    decay_from = int(args.steps * (1 - args.decay_fraction))
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if step < decay_from:
        return args.lr
    t = (step - decay_from) / max(1, args.steps - decay_from)
    return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def check_shipped(ap: argparse.ArgumentParser, args) -> None:
    """``--recipe shipped`` fixes every option except ``--out``, ``--threads`` and ``--seed``."""
    free = {"recipe", "out", "threads", "seed"}
    fixed = sorted(k for k, v in vars(args).items() if k not in free and v != ap.get_default(k))
    if fixed:
        ap.error("--recipe shipped sets every option except --out, --threads and --seed; got "
                 + ", ".join("--" + k.replace("_", "-") for k in fixed))


def check_options(ap: argparse.ArgumentParser, args) -> None:
    """Option combinations the main phase cannot run (``ap.error`` names them)."""
    if args.count_per_object and args.count_ratio <= 0:
        ap.error("--count-per-object needs --count-ratio > 0")
    if args.text_layers and not args.init_from:
        ap.error("--text-layers grows a trained model: it needs --init-from")
    if args.freeze_vision and (args.vision_steps or args.local_init):
        ap.error("--freeze-vision excludes the vision-only phase (--vision-steps, --local-init)")


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.recipe == "shipped":
        check_shipped(ap, args)
        return run_shipped_recipe(args.out, args.threads, args.seed)
    check_options(ap, args)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = build_tokenizer()
    processor = build_processor(tok)
    config = build_config(tok)
    if args.init_from:
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(args.init_from, local_files_only=True)
        if args.text_layers:
            model = grow_text_layers(model, args.text_layers, seed=args.seed)
        config = model.config
    else:
        model = build_model(config, seed=args.seed)
    model.model.language_model.set_attn_implementation("eager")  # training reads attention maps
    model.train()
    frozen_digest = freeze_pre_llm(model) if args.freeze_vision else None
    dv = config.vision_config.hidden_size
    probe = torch.nn.Linear(dv, 2 if args.size_weight else 1)
    qprobe = torch.nn.Linear(config.text_config.hidden_size, len(COLORS_LIST) + 1 + len(SHAPES) + 1 + 3)
    align = torch.nn.Parameter(torch.tensor([10.0, -5.0]))
    image_id = config.image_token_index
    word_ids = torch.tensor(tok.convert_tokens_to_ids(COLORS_LIST + list(SHAPES)))

    params = [p for p in model.parameters() if p.requires_grad]
    params += list(probe.parameters()) + list(qprobe.parameters()) + [align]
    opt = main_optimizer(model, params, args)
    lr_at = functools.partial(main_lr, args)

    val = generate_split("val", args.eval_images, seed=args.seed)
    val_scenes = list({r.image_id: r.scene for r in val}.values())[:20]
    if args.local_init and not args.init_from:
        probe_scenes = [sample_scene(scene_seed("val", 10**6 + i, args.seed), index=i) for i in range(4)]
        init_local_attention(model.model.vision_tower, torch.stack([to_pixels(sc.image) for sc in probe_scenes]))
    data_start = args.data_start
    t_start = time.time()  # the saved training time includes phase 0
    vision_log: list[dict] = []
    if args.vision_steps:
        vision_log = train_vision(model, probe, align, tok, word_ids, args, val_scenes)
        data_start += args.vision_steps * args.vision_scenes
    n_steps = args.time_steps or args.steps
    subset_until = int(args.steps * args.subset_fraction)
    gen = torch.Generator().manual_seed(args.seed)
    stream = SceneStream(tok, args.seed, data_start, n_steps * args.scenes, args.extra_counts)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=args.scenes, collate_fn=collate, num_workers=args.workers,
        prefetch_factor=4 if args.workers else None,
    )

    print(f"params: {sum(p.numel() for p in model.parameters()) / 1e6:.3f}M, steps {n_steps}, "
          f"scenes/step {args.scenes}, threads {args.threads}", flush=True)
    t0 = time.time()
    log = []
    ema = None
    for step, items in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = lr_at(step) * g["scale"]
        keep = subset_tokens(items, args.subset_tokens, gen) if step < subset_until else None
        ans_loss, align_loss, centre_loss, acc, q_loss = forward_losses(
            model, probe, align, items, tok, image_id, word_ids, keep, qprobe, args.count_weight,
            args.count_ratio, args.count_log_weight, args.count_per_object, args.size_weight, args.retrieval_from)
        loss = ans_loss + args.align_weight * align_loss + args.centre_weight * centre_loss + args.q_weight * q_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        cur = torch.tensor([ans_loss.item(), align_loss.item(), centre_loss.item(), acc.item(), q_loss.item()])
        ema = cur if ema is None else 0.98 * ema + 0.02 * cur
        if step % 25 == 0 or step == n_steps - 1:
            el = time.time() - t0
            print(f"step {step:5d} lr {lr_at(step):.2e} ans {ema[0]:.3f} align {ema[1]:.3f} centre {ema[2]:.3f} "
                  f"acc {ema[3]:.3f} q {ema[4]:.3f} | {el / 60:.1f} min, {el / (step + 1):.2f} s/step", flush=True)
        if args.time_steps:
            continue
        last = step == n_steps - 1 or (args.stop_after and step + 1 == args.stop_after)
        if (step + 1) % args.eval_every == 0 or last:
            res = evaluate(model, processor, val)
            log.append({"step": step + 1, "minutes": (time.time() - t0) / 60, **res})
            print("val", json.dumps(log[-1]), flush=True)
            if frozen_digest is not None and frozen_parts_digest(model) != frozen_digest:
                raise RuntimeError("--freeze-vision: a frozen tensor changed during training")
            save(model, processor, args, log, time.time() - t_start, vision_log)
        if args.stop_after and step + 1 >= args.stop_after:
            break
    if args.time_steps:
        print(f"timing: {(time.time() - t0) / n_steps:.3f} s/step")
    return 0


def train_vision(model, probe, align, tok, word_ids, args, val_scenes) -> list[dict]:
    """Phase 0: the vision tower, projector, colour/shape word embeddings, centre probe and the
    alignment scalars learn from the alignment and centre losses alone (no LM forward: cheap
    steps). What the LM can later retrieve is bounded by what the patches say here, shapes
    above all (a ViT from scratch learns them slowly)."""
    params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    params += [model.get_input_embeddings().weight] + list(probe.parameters()) + [align]
    opt = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.0, betas=(0.9, 0.98))
    stream = SceneStream(tok, args.seed, args.data_start, args.vision_steps * args.vision_scenes)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=args.vision_scenes, collate_fn=collate, num_workers=args.workers,
        prefetch_factor=4 if args.workers else None,
    )
    t0 = time.time()
    log = []
    for step, items in enumerate(loader):
        warm = min(1.0, (step + 1) / 20)
        tail = min(1.0, 5 * (args.vision_steps - step) / args.vision_steps)  # linear decay over the last 20%
        for g in opt.param_groups:
            g["lr"] = args.vision_lr * warm * max(tail, 0.05)
        _, align_loss, centre_loss = vision_losses(model, probe, align, items, word_ids, args.size_weight)
        loss = align_loss + args.centre_weight * centre_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.vision_steps - 1:
            acc = patch_word_accuracy(model, tok, val_scenes)
            log.append({"step": step + 1, "minutes": (time.time() - t0) / 60, **acc})
            print(f"vision {step:5d} align {align_loss.item():.3f} centre {centre_loss.item():.3f} "
                  f"patch colour {acc['patch_colour']:.3f} shape {acc['patch_shape']:.3f} | "
                  f"{(time.time() - t0) / 60:.1f} min", flush=True)
    model.train()
    return log


def layer_placement(n_source: int, n_target: int) -> list[int]:
    """Target index of each source decoder layer when growing ``n_source`` -> ``n_target``
    layers: the first and the last keep their ends, the others are spread evenly (rounded)."""
    if n_source == 1:
        return [0]
    return [round(i * (n_target - 1) / (n_source - 1)) for i in range(n_source)]


@torch.no_grad()
def grow_text_layers(model, n_layers: int, seed: int = 0):
    """A copy of ``model`` whose language model has ``n_layers`` decoder layers and computes the
    same function: the trained layers go to :func:`layer_placement`'s indices, every new layer
    is freshly initialised (seeded) with its attention output and MLP down projections zero, so
    it adds nothing to the residual stream until it trains. Everything else is copied."""
    import copy

    src = model.config.text_config.num_hidden_layers
    if n_layers < src:
        raise ValueError(f"--text-layers must be >= the loaded depth {src}, got {n_layers}")
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = n_layers
    grown = build_model(config, seed=seed)
    state = grown.state_dict()
    prefix = "model.language_model.layers."
    placed = dict(zip(layer_placement(src, n_layers), range(src)))
    for key, value in model.state_dict().items():
        if not key.startswith(prefix):
            state[key] = value.clone()
    for target in range(n_layers):
        if target in placed:
            for key, value in model.state_dict().items():
                if key.startswith(f"{prefix}{placed[target]}."):
                    state[f"{prefix}{target}." + key[len(f"{prefix}{placed[target]}."):]] = value.clone()
        else:
            state[f"{prefix}{target}.self_attn.o_proj.weight"].zero_()
            state[f"{prefix}{target}.mlp.down_proj.weight"].zero_()
    grown.load_state_dict(state, strict=True)
    grown.generation_config = copy.deepcopy(model.generation_config)
    return grown


def frozen_parts(model) -> dict[str, torch.nn.Module]:
    """What ``--freeze-vision`` freezes: everything a pre-LLM selector reads (the vision tower's
    features, the projected tokens, the question's token embeddings)."""
    return {"vision_tower": model.model.vision_tower, "multi_modal_projector": model.model.multi_modal_projector,
            "embed_tokens": model.get_input_embeddings()}


def freeze_pre_llm(model) -> str:
    """Freeze :func:`frozen_parts`; returns their digest (checked again at every save)."""
    for part in frozen_parts(model).values():
        part.requires_grad_(False)
    return frozen_parts_digest(model)


def frozen_parts_digest(model) -> str:
    """sha256 over the tensors of :func:`frozen_parts` (names, dtypes, shapes, raw bytes)."""
    return tensor_digest({f"{name}.{key}": value for name, part in frozen_parts(model).items()
                          for key, value in part.state_dict().items()})


def vision_tower_digest(model) -> str:
    """sha256 over the vision tower's tensors (names and raw bytes, in name order)."""
    return tensor_digest(model.model.vision_tower.state_dict())


@torch.no_grad()
def init_local_attention(tower, probe_pixels: torch.Tensor, amplitude: float = 3.0, peak: float = 40.0) -> None:
    """Give the ViT a convolution-like start: position embeddings carry a 2-D sin/cos code of the
    patch's grid position (as +code and -code, so LayerNorm's mean shift cancels in their
    difference), the patch embedding writes the other dimensions, and in layer 0 (layer 1) head
    h's query is the code of the patch 1 (2) steps right, left, down or up, its key the code
    itself, so at initialisation each head attends to that neighbour (the query scale is set on
    ``probe_pixels`` so the neighbour's logit is about ``peak``). All of it stays trainable."""
    lambdas = (48.0, 24.0, 12.0, 6.0)
    offsets = [[(1, 0), (-1, 0), (0, 1), (0, -1)], [(2, 0), (-2, 0), (0, 2), (0, -2)]]
    ys, xs = torch.meshgrid(torch.arange(GRID, dtype=torch.float32), torch.arange(GRID, dtype=torch.float32),
                            indexing="ij")
    w = torch.tensor([2 * math.pi / lam for lam in lambdas])
    xs, ys = xs.reshape(-1, 1) * w, ys.reshape(-1, 1) * w
    code = torch.cat([xs.sin(), xs.cos(), ys.sin(), ys.cos()], dim=1)  # [576, P]
    P, nf = code.shape[1], len(lambdas)
    emb = tower.embeddings
    dim = emb.position_embedding.weight.shape[1]
    layers = tower.encoder.layers
    head_dim = layers[0].self_attn.head_dim
    heads = layers[0].self_attn.num_heads if hasattr(layers[0].self_attn, "num_heads") else dim // head_dim
    if 2 * P >= dim or head_dim < P or heads < 4:
        raise ValueError(f"init_local_attention needs hidden > {2 * P}, head_dim >= {P} and >= 4 heads")
    pos = emb.position_embedding.weight
    pos.zero_()
    pos[1:, :P] = amplitude * code
    pos[1:, P:2 * P] = -amplitude * code
    emb.patch_embedding.weight[: 2 * P] = 0
    read = torch.zeros(P, dim)  # hidden -> code: (+code - (-code)) / 2
    read[torch.arange(P), torch.arange(P)] = 0.5
    read[torch.arange(P), P + torch.arange(P)] = -0.5

    def shift(dx: int, dy: int) -> torch.Tensor:  # code(g) @ M == code(g + (dx, dy))
        M = torch.zeros(P, P)
        for axis, d in ((0, dx), (1, dy)):
            for f, lam in enumerate(lambdas):
                a = 2 * math.pi / lam * d
                si, co = axis * 2 * nf + f, axis * 2 * nf + nf + f
                M[si, si], M[co, si], M[co, co], M[si, co] = math.cos(a), math.sin(a), math.cos(a), -math.sin(a)
        return M

    h = tower.pre_layrnorm(emb(probe_pixels))
    idx = torch.arange(GRID * GRID)
    for layer, offs in zip(layers, offsets):
        at = layer.self_attn
        for head, (dx, dy) in enumerate(offs):
            rows = slice(head * head_dim, head * head_dim + P)
            at.q_proj.weight[head * head_dim:(head + 1) * head_dim] = 0
            at.k_proj.weight[head * head_dim:(head + 1) * head_dim] = 0
            at.q_proj.weight[rows] = shift(dx, dy).T @ read
            at.k_proj.weight[rows] = read
            at.q_proj.bias[head * head_dim:(head + 1) * head_dim] = 0
            at.k_proj.bias[head * head_dim:(head + 1) * head_dim] = 0
        x = layer.layer_norm1(h)[:, 1:]
        q, k = at.q_proj(x), at.k_proj(x)
        for head, (dx, dy) in enumerate(offs):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            logits = q[..., cols] @ k[..., cols].transpose(-1, -2) * head_dim ** -0.5  # [B, 576, 576]
            tx, ty = idx % GRID + dx, idx // GRID + dy
            ok = (tx >= 0) & (tx < GRID) & (ty >= 0) & (ty < GRID)
            target = logits[:, idx[ok], (ty * GRID + tx)[ok]].mean()
            at.q_proj.weight[cols] *= peak / float(target)
        h = layer(h, None)


def save(model, processor, args, log, seconds, vision_log=()):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    info = {
        "name": "shapes-llava",
        "trained_by": "experiments/train_shapes_llava.py",
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "train_seconds": round(seconds, 1),
        "val_log": log,
        "vision_log": list(vision_log),
        "answer_rule": "argmax of the last-position logits over the category's candidate answer words",
        "prompt": "USER: <image>\\n{question} ASSISTANT:",
        "num_decoder_layers": model.config.text_config.num_hidden_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vision_tower_sha256": vision_tower_digest(model),
        "pre_llm_sha256": frozen_parts_digest(model),
    }
    prev = Path(args.init_from) / "training_info.json" if args.init_from else None
    if prev is not None and prev.is_file():
        info["previous_stage"] = json.loads(prev.read_text())
        info["total_train_seconds"] = round(seconds + info["previous_stage"].get("total_train_seconds", info[
            "previous_stage"]["train_seconds"]), 1)
    (out / "training_info.json").write_text(json.dumps(info, indent=2))
    write_manifest(out)  # SHA256SUMS of every file: tokensel.zoo.load verifies it (last: it covers the rest)


if __name__ == "__main__":
    sys.exit(main())
