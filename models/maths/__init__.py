"""Layer 3, the pure maths and data types around a network: image input (``images``),
pre-processing and letterbox (``preprocessing``, ``coordinates``), NMS (``nms``), masks and
polygons (``masks``, ``polygons``), typed predictions and Roboflow-shaped responses
(``predictions``, ``responses``), and detection scoring, mAP included (``evaluation``).

May import: ``models.common``, ``models.identity``. No I/O, no runtimes.
"""
