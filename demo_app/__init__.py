"""The offline demo: a scripted end-to-end scenario and a phone-shaped device app (pocketrank.demo_app.stack)."""
