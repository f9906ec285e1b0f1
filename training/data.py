"""Documents -> model examples and padded batches, through ``models.features`` (the one feature builder).

Each document's lines are already in tb-yx order (``training.shards``). A document becomes one or more 512-token
windows (``models.features.build_windows``: PaddleOCR trains on the first window only; we keep every window, so
long documents are trained and evaluated whole). For RE, every window gets its gold entities and candidate
(question, answer) pairs with gold pair labels (``models.features.build_re_inputs``); a window without candidate
pairs adds nothing to the RE loss and is left out of RE training.

A model of the ``layoutxlm`` family (LayoutXLM with its visual backbone) also reads each document's page image:
:func:`split_images` loads it from the split's shard ``image_dir``, :func:`encode_documents` prepares it once per
document as PaddleOCR does (``models.page_image``) and the batches carry it as ``image (B, 3, 224, 224)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.features import ReInputs, Window, batch_windows, bio_labels, build_re_inputs, build_windows
from schemas.annotations import KieDocument

__all__ = ["Example", "encode_documents", "ser_batch", "re_batch", "document_texts", "LengthBucketSampler",
           "split_images"]


@dataclass(frozen=True, eq=False)
class Example:
    """One model input: a window of a document (its RE inputs for the RE task; its page image, shared by the
    document's windows, for a model with a visual backbone)."""

    doc: int
    window: Window
    re: ReInputs | None = None
    image: np.ndarray | None = None


def document_texts(documents: Sequence[KieDocument]) -> list[str]:
    """All line texts of the documents (tokenizer training corpus)."""
    return [ln.text for d in documents for ln in d.lines]


def encode_documents(documents: Sequence[KieDocument], tokenizer, labels: Sequence[str],  # noqa: ANN001
                     *, task: str = "ser", max_len: int = 512,
                     images: Sequence[np.ndarray] | None = None) -> list[Example]:
    """Builds the examples of a list of documents.

    Args:
        documents: documents with lines in reading order.
        tokenizer: a ``LayoutXLMTokenizer`` (``models.tokenizer.load_tokenizer``).
        labels: the class list (``Manifest.labels``).
        task: ``ser`` or ``re``.
        max_len: tokens per window.
        images: per document, its RGB page image (:func:`split_images`), for a model with a visual backbone.

    Returns:
        The examples, in document order.
    """
    from models.page_image import kie_thumbnail, normalize_kie_image

    label2id = {n: i for i, n in enumerate(bio_labels(labels))}
    out = []
    for d, doc in enumerate(documents):
        image = None if images is None else normalize_kie_image(kie_thumbnail(images[d]))
        texts = [ln.text for ln in doc.lines]
        line_labels = [ln.label for ln in doc.lines]
        windows = build_windows(texts, [ln.box for ln in doc.lines], doc.width, doc.height, tokenizer,
                                line_labels=line_labels, label2id=label2id, max_len=max_len, clip=True)
        links = doc.links() if task == "re" else None
        for w in windows:
            out.append(Example(d, w, build_re_inputs(w, line_labels, links) if task == "re" else None, image))
    return out


def ser_batch(examples: Sequence[Example], *, multiple: int = 64) -> dict[str, np.ndarray]:
    """SER examples as one batch (``models.features.batch_windows`` with labels).

    Args:
        examples: the examples.
        multiple: token-axis rounding (0 = full windows).

    Returns:
        ``input_ids (B,L)``, ``bbox (B,L,4)``, ``attention_mask (B,L)``, ``token_type_ids (B,L)``, ``labels (B,L)``.
    """
    return _with_images(batch_windows([e.window for e in examples], labels=True, multiple=multiple), examples)


def re_batch(examples: Sequence[Example], *, geometry: bool = False, multiple: int = 64) -> dict[str, np.ndarray]:
    """RE examples as one batch (``models.features.batch_windows`` with their RE inputs).

    Args:
        examples: RE examples (``Example.re`` set, with gold pair labels for training).
        geometry: add ``pair_features`` (the geometric RE head).
        multiple: token-axis rounding (0 = full windows).

    Returns:
        The model inputs plus ``entities (B,E,3)`` (padding -1), ``pairs (B,P,2)`` (padding -1) and, with gold
        labels, ``pair_labels (B,P)`` (padding -100).
    """
    return _with_images(batch_windows([e.window for e in examples], re=[e.re for e in examples], geometry=geometry,
                                      multiple=multiple), examples)


def _with_images(batch: dict[str, np.ndarray], examples: Sequence[Example]) -> dict[str, np.ndarray]:
    """Adds ``image (B, 3, 224, 224)`` when the examples carry page images."""
    if examples and examples[0].image is not None:
        batch["image"] = np.stack([e.image for e in examples]).astype(np.float32)
    return batch


def split_images(manifest, split: str, docs: Sequence[KieDocument], *,  # noqa: ANN001
                 required: bool = False) -> list[np.ndarray | None]:
    """Each document's page image (RGB ndarray) from its split's shard ``image_dir``s, None where not found.

    Args:
        manifest: the ``training.shards`` manifest.
        split: the split the documents come from.
        docs: the documents (their ``name`` is the image file name).
        required: raise unless every document has its image (a model that reads the page image).

    Raises:
        ValueError: ``required`` and some document has no image.
    """
    import fsspec
    from PIL import Image

    dirs = [s.image_dir for s in manifest.split(split) if s.image_dir]
    images: list[np.ndarray | None] = []
    for d in docs:
        images.append(None)
        for folder in dirs:
            try:
                with fsspec.open(f"{folder.rstrip('/')}/{d.name}", "rb") as f:
                    images[-1] = np.asarray(Image.open(f).convert("RGB"))
                break
            except FileNotFoundError:
                continue
    missing = [d.name for d, im in zip(docs, images) if im is None]
    if required and missing:
        raise ValueError(f"the model reads the page image (LayoutXLM with its visual backbone), but {len(missing)} "
                         f"document(s) of split {split!r} have none (first: {missing[0]}); give the split's shards "
                         f"an image_dir holding them")
    return images


class LengthBucketSampler:
    """Batches of windows of similar length, reshuffled every epoch, split over data-parallel ranks.

    Each epoch: shuffle all indices (seeded by ``seed + epoch``, so a resumed run sees the same batches), cut them
    into pools of ``pool`` batches, sort each pool by window length, cut it into batches and shuffle the batch
    order. With the token axis cut to the longest window of a batch (``ser_batch``), similar lengths waste less
    compute on padding. Rank ``r`` of ``world`` takes batches ``r, r + world, ...``, every rank the same count.

    Args:
        lengths: each example's real token count.
        batch_size: examples per batch.
        seed: base seed.
        pool: batches per sorting pool.
        rank / world: this process's data-parallel rank and the number of ranks.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, pool: int = 16, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size < 1 or pool < 1 or world < 1 or not 0 <= rank < world:
            raise ValueError(f"bad sampler settings batch_size={batch_size} pool={pool} rank={rank} world={world}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.pool, self.rank, self.world = batch_size, seed, pool, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose batches ``__iter__`` yields."""
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        size = self.batch_size * self.pool
        batches = []
        for s in range(0, len(order), size):
            chunk = order[s:s + size]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return -(-len(self._all_batches()) // self.world)

    def __iter__(self):  # noqa: ANN204
        batches = self._all_batches()
        n = len(self)
        batches += batches[:n * self.world - len(batches)]  # every rank gets the same number of steps
        return iter(batches[self.rank::self.world][:n])
