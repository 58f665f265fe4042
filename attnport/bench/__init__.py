"""`attnport bench`: timing of the SE/ECA/CBAM backends against peers and the memory-bandwidth floor.

`core` holds the cases, the timing and the floor; `report` prints the table, the JSON and the plot.
"""
