"""Language modelling on top of the model: data, sampling, AdamW, checkpoints, training, evaluation,
generation, and sequential-pixel classification. The long loops (``train``, ``perplexity``, ``generate``)
run the fast engine by default and take ``engine=`` (see ``minicp.engines``).
"""
