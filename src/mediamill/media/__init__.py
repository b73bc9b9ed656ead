"""The only place mediamill touches media libraries (PyAV, Pillow, libvips, pdfium, python-docx,
pocketsphinx) and external tools (ffmpeg, LibreOffice).

    sniff     what a file is, from its bytes
    probe     cheap metadata: strict ``probe_av`` for actions, forgiving ``probe_input`` for routing
    tools     which ffmpeg, running it (timeout, progress, stderr tail), ``doctor_report``
    video     renditions and ladders (one decode), frames, scenes, HLS
    contact   contact-sheet layout
    image     header checks, one normalising decode, resize/thumbnail, encoders
    audio     transcodes, waveform peaks (audiowaveform JSON), loudness
    document  PDF and DOCX, LibreOffice conversion
    speech    offline transcription

Actions (``mediamill.actions``) call these; nothing here knows about jobs or the store.
"""
