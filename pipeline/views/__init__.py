"""What a person looks at: stored boxes drawn on a video (``render``) and the HTML report of a
run (``report``). No inference.

Imports: ``errors``, ``locations``, ``media``, ``output``; never Ray.
"""
