"""Pure plotting: data in, figure out. Nothing here reads UI state or writes files, except the
explicit ``save_*`` functions.

* ``layout``: one fixed layered layout per graph; ``edges``: which edges a view shows, circuit diffs;
* ``circuit``: the circuit graph (plotly); ``static``: the same without a browser (matplotlib, GIF);
* ``dynamics``: metrics, edge trends and circuit size against step; ``heads``: layer x head maps;
* ``view``: the view state (URL and JSON); ``rundata``: a run's data in memory; ``export``: files.
"""
