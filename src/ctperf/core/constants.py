"""Physical constants and versioned definitions shared by Mode A and Mode B.

Every value here is documented with its source in docs/definitions.md.
"""

#: Brain tissue density, g/mL (Ostergaard 1996; Wintermark 2005).
RHO_G_PER_ML = 1.04
#: Hematocrit in large vessels and in capillaries.
HCT_LARGE_VESSEL = 0.45
HCT_SMALL_VESSEL = 0.25
#: Hematocrit correction factor kH = (1 - Hct_large) / (1 - Hct_small).
KH = (1.0 - HCT_LARGE_VESSEL) / (1.0 - HCT_SMALL_VESSEL)

#: Version of the index definitions in docs/definitions.md. Bump when any formula or default changes.
DEFINITION_VERSION = "2.21"
#: Version of the perfusion engine's method (deconvolution, bias correction, estimands; docs/definitions.md §2, §6).
ENGINE_VERSION = "2.13"


#: Tissue must be followed this many arterial bolus widths (FWHM) past its peak for the study's dispersion prior to
#: tell the dispersions apart (``qa_values.tissue_observed_bolus_widths``); below it the prior fitted on the time grid
#: mostly reads no dispersion whatever the tissue's, ``qa_flags.tmax_dispersion_ambiguous`` is raised and the default
#: prior is fitted at the acquired frames instead (docs/definitions.md §2).
DISPERSION_MIN_OBSERVED_WIDTHS = 3.5
#: Above this noise of the AIF's frames, as a fraction of its peak (``qa_values.aif_frame_noise_hu`` /
#: ``aif_peak_hu``), the study's dispersion prior follows the AIF's noise draw rather than the tissue: every model curve
#: carries that one draw, a sharp one more than a dispersed one; ``qa_flags.tmax_dispersion_ambiguous`` and
#: ``cbf_dispersion_ambiguous`` are raised (docs/definitions.md §2, measured in docs/engine-notes.md "session 48").
AIF_FRAME_NOISE_MAX_FRACTION = 0.02
