"""Mode B: stroke indices from existing vendor maps.

Input decoders (pure numpy in / out, file loading in thin wrappers):

- :mod:`ctperf.modeb.colormap_decode` - colour-coded map images -> scalar values via the burned-in colour bar;
- :mod:`ctperf.modeb.map_inputs` - load a map from NIfTI / scalar DICOM / colour DICOM, check grids match;
- :mod:`ctperf.modeb.roi_mip` - yellow hand-drawn ROI on a MIP screenshot -> mask on the map grid;
- :mod:`ctperf.modeb.curves_csv` - AIF / VOF curves from CSV, time to peak.
"""
