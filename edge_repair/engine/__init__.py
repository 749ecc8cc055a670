"""The forgetting engine: STAMP / STAMP-LR closed-form edits, pure math apart from model surgery."""
