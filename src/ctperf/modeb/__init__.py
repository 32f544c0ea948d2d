"""Mode B: stroke indices from existing vendor maps.

Input decoders (pure numpy in / out, file loading in thin wrappers):

- :mod:`ctperf.modeb.colormap_decode` - colour-coded map images -> scalar values via the burned-in colour bar:
  ``find_colour_bar(rgb) -> ColourBar``, ``decode_rgb(rgb, bar, (lo, hi)) -> (values, residual)``,
  ``decode_rgb_volume(rgb_zyx3, (lo, hi))``, ``decode_colour_series(dir | file | [files], (lo, hi))``,
  ``parse_range("0,10")``;
- :mod:`ctperf.modeb.map_inputs` - ``load_map(path, value_range=None) -> (vol_zyx, affine_ras, info)`` from
  NIfTI / scalar DICOM / Parametric Map / colour DICOM, ``check_same_grid({name: (vol, affine)})``,
  ``read_dicom_series``;
- :mod:`ctperf.modeb.roi_mip` - yellow hand-drawn ROI on a MIP screenshot -> mask on the map grid:
  ``yellow_mask(rgb)``, ``fill_roi(mask)``, ``register_screenshot(...)``,
  ``roi_from_screenshot(png, tmax_zyx, affine_ras) -> RoiResult(mask2d_yx, footprint_zyx, registration)``;
- :mod:`ctperf.modeb.colour_mip` - colour-coded (rainbow / vendor table) MIP screenshots: ``is_colour_coded(rgb)``,
  ``register_colour_screenshot(...)`` (correlation ratio of colour labels vs MIP values), ``unexplained_by_map``
  (the yellow the colour map does not explain is the ROI);
- :mod:`ctperf.modeb.pipeline_b` - ``analyse_maps`` (pure) and ``run_maps`` (files); ``saved_tissue`` reuses the
  tissue mask, midline and sinus of a ctperf Mode A folder so the same maps give the same indices (``mode_a_note``
  names those the ROI footprint changes by design);
- :mod:`ctperf.modeb.curves_csv` - ``read_curve_csv(path) -> (time_s, values)``, ``time_to_peak_s(t, y)``.

All user-input problems raise :class:`ctperf.errors.InputError` with a one-line message.
"""
