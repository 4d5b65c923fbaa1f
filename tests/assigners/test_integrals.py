"""MaskIntegrals and integral_image against direct pixel counting."""
import pytest
import torch

from assigners import MaskIntegrals, integral_image
from tests.assigners.reference import brute_counts, random_case


def _direct_integral(masks):
    """I[g, y, x] = pixels with row < y and col < x, one entry at a time."""
    g, h, w = masks.shape
    out = torch.zeros((g, h + 1, w + 1), dtype=torch.int32)
    for y in range(h + 1):
        for x in range(w + 1):
            out[:, y, x] = masks[:, :y, :x].flatten(1).sum(1)
    return out


def test_integral_image_matches_definition(device):
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 7, 9, generator=gen) < 0.4
    got = integral_image(masks.to(device))
    assert got.dtype == torch.int32 and got.shape == (3, 8, 10)
    assert torch.equal(got.cpu(), _direct_integral(masks))


def test_integral_image_long_rows_stay_exact():
    masks = torch.ones((1, 2, 40_000), dtype=torch.bool)  # rows longer than int16 can count
    assert integral_image(masks)[0, -1, -1] == 80_000


@pytest.mark.parametrize("seed", range(3))
def test_compact_form_equals_full(seed, device):
    gen = torch.Generator().manual_seed(seed)
    _, masks, _ = random_case(gen, 19, 23, g=5, a=1, spill=seed == 1)
    masks[2] = False  # an empty instance
    mi = MaskIntegrals.from_masks(masks.to(device))
    assert len(mi) == 5 and mi.device.type == device.type
    assert torch.equal(mi.full().cpu(), integral_image(masks))
    assert mi.areas().tolist() == masks.flatten(1).sum(1).tolist()
    # regions are the tight pixel boxes, compact: Σ (h+1)(w+1)
    sizes = mi.size.cpu().tolist()
    for g, (h, w) in enumerate(sizes):
        ys, xs = torch.nonzero(masks[g], as_tuple=True)
        expect = (0, 0) if ys.numel() == 0 else (int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
        assert (h, w) == expect
    assert mi.data.numel() == sum((h + 1) * (w + 1) for h, w in sizes)


def test_from_full_and_from_regions_agree(device):
    gen = torch.Generator().manual_seed(4)
    gt, masks, anchors = random_case(gen, 15, 12, g=3, a=30)
    full = integral_image(masks.to(device))
    regions = [full[g] for g in range(3)]
    built = MaskIntegrals.from_regions(regions, [(0, 0)] * 3, (15, 12))
    expect = brute_counts(masks, anchors)
    for mi in (MaskIntegrals.from_full(full), built):
        assert torch.equal(mi.count(anchors.to(device)).cpu(), expect)
        assert torch.equal(mi.full().cpu(), full.cpu())


def test_select_and_to(device):
    gen = torch.Generator().manual_seed(5)
    _, masks, anchors = random_case(gen, 10, 10, g=4, a=12)
    mi = MaskIntegrals.from_masks(masks).to(device)
    sub = mi.select(torch.tensor([3, 1], device=device))
    assert torch.equal(sub.count(anchors.to(device)).cpu(), brute_counts(masks[[3, 1]], anchors))
    sub = mi.select(torch.tensor([True, False, True, False], device=device))
    assert torch.equal(sub.count(anchors.to(device)).cpu(), brute_counts(masks[[0, 2]], anchors))


def test_count_accepts_per_instance_boxes(device):
    gen = torch.Generator().manual_seed(6)
    _, masks, anchors = random_case(gen, 11, 13, g=2, a=10)
    mi = MaskIntegrals.from_masks(masks.to(device))
    per = torch.stack([anchors[:5], anchors[5:]]).to(device)  # [2, 5, 4]
    full = brute_counts(masks, anchors)
    assert mi.count(per).cpu().tolist() == [full[0, :5].tolist(), full[1, 5:].tolist()]
    with pytest.raises(ValueError, match="boxes"):
        mi.count(torch.zeros(3, 5, 4, device=device))


def test_transform_maps_boxes_into_the_integral_frame(device):
    # Masks live in a 20×16 frame. Query boxes come from a frame flipped horizontally and scaled
    # by 2: x_frame = -0.5·x + 16, y_frame = 0.5·y; only the window [2,3,14,18) is counted.
    gen = torch.Generator().manual_seed(8)
    _, masks, frame_boxes = random_case(gen, 20, 16, g=3, a=25)
    affine = torch.tensor([-0.5, 16.0, 0.5, 0.0])
    window = torch.tensor([2, 3, 14, 18])
    query = torch.stack([(16 - frame_boxes[:, 2]) * 2, frame_boxes[:, 1] * 2,
                         (16 - frame_boxes[:, 0]) * 2, frame_boxes[:, 3] * 2], 1)  # [A, 4]
    cut = torch.zeros_like(masks)
    cut[:, 3:18, 2:14] = masks[:, 3:18, 2:14]
    mi = MaskIntegrals.from_masks(masks.to(device)).with_transform(affine, window)
    assert torch.equal(mi.count(query.to(device)).cpu(), brute_counts(cut, frame_boxes))
    assert mi.areas().cpu().tolist() == cut.flatten(1).sum(1).tolist()
    assert float(mi.area_scale()) == 0.25


def test_sparse_pairs_equal_brute_force(device):
    gen = torch.Generator().manual_seed(9)
    _, masks, anchors = random_case(gen, 17, 21, g=4, a=30, spill=True)
    mi = MaskIntegrals.from_masks(masks.to(device))
    instance = torch.randint(0, 4, (30,), generator=gen)
    got = mi.count_pairs_as(instance.to(device), anchors.to(device), torch.float32).cpu()
    full = brute_counts(masks, anchors)
    assert got.tolist() == full[instance, torch.arange(30)].float().tolist()


def test_pickle_and_moves_keep_the_lookup_tables(device):
    import pickle
    gen = torch.Generator().manual_seed(10)
    _, masks, anchors = random_case(gen, 12, 14, g=3, a=20)
    mi = pickle.loads(pickle.dumps(MaskIntegrals.from_masks(masks)))  # as Ray / loader workers ship it
    assert "_geometry" in mi.__dict__
    moved = mi.to(device)
    assert all(t.device.type == device.type for t in moved.__dict__["_geometry"])
    assert torch.equal(moved.count(anchors.to(device)).cpu(), brute_counts(masks, anchors))
    plain = MaskIntegrals(mi.data, mi.offset, mi.origin, mi.size, mi.total, mi.image_size)  # no tables yet
    assert torch.equal(plain.count(anchors), brute_counts(masks, anchors))
