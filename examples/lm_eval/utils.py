"""English prompts for the `flare` lm-eval model (flare/integrations/lm_eval.py): each document gets
`english_prompt`, its English side rendered with the same template as the target's doc_to_text (the
prompts of flare-xlt's decoder scoring, flare/data/tasks.py), so the model reads both alike."""


def nusax_english(dataset):
    return dataset.map(lambda doc: {"english_prompt": f"{doc['text_en']}\nSentiment:"})


def xnli_english(dataset):
    return dataset.map(
        lambda doc: {"english_prompt": f"Premise: {doc['premise_en']}\nHypothesis: {doc['hypothesis_en']}\nLabel:"}
    )
