"""Small runtime helpers: compute devices, seeds, atomic writes (:mod:`~hwsim.util.runtime`,
:mod:`~hwsim.util.seeds`) and inference times (:mod:`~hwsim.util.timefmt`)."""
