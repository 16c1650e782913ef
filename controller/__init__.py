"""ICL logic as a library: prompt templates, demonstration retrieval, label scoring, calibration.

Nothing here imports the HTTP service or the engine; what needs the model receives a `LabelScorer`.
"""
