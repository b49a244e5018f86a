"""The demo's FMA-format mirror and its music: what ``make demo``'s scraper crawls.

:mod:`waveforms.demo.mirror` serves FMA-site markup (:mod:`waveforms.demo.markup`) and
files on 127.0.0.1; :mod:`waveforms.demo.music` makes MP3s with ffmpeg and serves
Debian's hyperrogue-music for ``make demo``. Nothing in :mod:`waveforms.scrape` imports it;
the tests serve it too, with faults (``test/helpers/faulty_mirror.py``).
"""
