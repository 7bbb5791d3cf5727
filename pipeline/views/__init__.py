"""What a person looks at or takes elsewhere: stored boxes drawn on a video (``render``, with an
analysis's lines and zones: ``overlay``), the HTML report of a run (``report``, its analyses:
``report_analysis``), and the exports other tools read (``export``: COCO, MOTChallenge, CSV,
``sv.Detections``). No inference.

Imports: ``errors``, ``config``, ``locations``, ``media``, ``inference`` (class names),
``output``, ``analysis``; never Ray.
"""
