"""The Ray shells: the decoder task, the YoloActor, the coordinator and the driver.

This sub-package is the only place that imports ``ray``; everything it runs lives in the
Ray-free modules of ``pipeline`` and is tested there.
"""
