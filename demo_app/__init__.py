"""The offline demo: a scripted end-to-end scenario (and, later, a phone-shaped page)."""
