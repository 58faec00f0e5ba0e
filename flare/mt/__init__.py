"""Machine translation and the English side FLARE reads: NLLB/M2M100 and its cache, language codes,
the MT encoder, answer projection, the lexicon translator, English-side variants.
"""
