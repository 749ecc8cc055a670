"""`edge-repair bench`: what an edit costs on this device (issue 6).

memory     peak MLX / OS memory of load, chat, forget and save (paper Table 1's claim)
scaling    STAMP vs STAMP-LR solve time against rank and hidden size (§4.3's complexity)
baselines  training-based unlearning (GA, NPO, RMU) vs STAMP on one fact (Table 8)

Each returns a plain dict (raw numbers); report.py turns it into a table or results files.
"""
