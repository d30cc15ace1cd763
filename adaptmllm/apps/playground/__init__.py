"""The Gradio playground: the batching translation worker (worker), the session logic (session), login and share
checks (auth) and the app itself (app).

May import: adaptmllm.runs and below. Gradio is imported only inside functions.
"""
