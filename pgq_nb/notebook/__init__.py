"""The notebook layer: DataFrames in and out, progress bars, the dashboard.

Only this package imports pandas, tqdm, ipywidgets and matplotlib; the core never does.
"""
