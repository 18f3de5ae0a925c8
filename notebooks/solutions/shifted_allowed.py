"""Solution to notebook 05's first exercise: the mask_mod predicate of LongLoRA S2 varlen's shifted heads."""


def shifted_allowed(q_idx, kv_idx, g):
    # varlen: the groups start u = g/2 earlier (the first group holds u tokens, the others g); causal inside.
    # Shifting both indices by u puts every group on a multiple of g, so // finds the group.
    u = g // 2
    return (kv_idx <= q_idx) & ((q_idx + u) // g == (kv_idx + u) // g)
