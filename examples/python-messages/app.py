"""The Cloud Run tutorial's messages app (Flask, SQLAlchemy, pg8000) as a wasm
component: only `connect_with_iam` changed, to connect through the connector
component as Google's Python connector would (``creator=``), instead of sending
an IAM token as the password over a plain connection.

Settings, from the host's environment: INSTANCE_CONNECTION_NAME
(project:region:instance), DB_USER (an IAM user such as
``sa-name@project-id.iam``, or a database user with DB_PASS), DB_PASS (none:
automatic IAM database authentication), DB_NAME, IP_TYPE (public, private or
psc; default psc, as in the tutorial), and for the connector
GOOGLE_APPLICATION_CREDENTIALS, GCP_DB_ADMIN_ENDPOINT (an emulator; default
Google's), and the cross-request store: GCP_DB_KV_BUCKET (a ``wasi:keyvalue``
bucket) or GCP_DB_STORE_DIR (a granted directory), with GCP_DB_STORE_SECRET.
"""

import os

import sqlalchemy
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

import wasi_wsgi
from gcp_db_connector import Connector, describe

app = Flask(__name__)


def connect_with_iam():
    connector = None

    # componentize-py runs this module when it builds the component, so the
    # settings are read here, per connect, not at import.
    def getconn():
        nonlocal connector
        env = lambda name, default=None: os.environ.get(name) or default  # noqa: E731
        if connector is None:
            connector = Connector(
                refresh_strategy="lazy",
                sqladmin_api_endpoint=env("GCP_DB_ADMIN_ENDPOINT"),
                store_bucket=env("GCP_DB_KV_BUCKET"),
                store_dir=env("GCP_DB_STORE_DIR"),
                store_secret=env("GCP_DB_STORE_SECRET"),
            )
        return connector.connect(
            os.environ["INSTANCE_CONNECTION_NAME"],
            "pg8000",
            user=os.environ["DB_USER"],
            password=env("DB_PASS"),
            db=env("DB_NAME", "postgres"),
            enable_iam_auth=not env("DB_PASS"),
            ip_type=env("IP_TYPE", "psc"),
        )

    return sqlalchemy.create_engine("postgresql+pg8000://", creator=getconn)


db = connect_with_iam()


@app.route("/", methods=["GET", "POST"])
def index():
    if request.method == "POST":
        content = request.json.get("content")
        with db.connect() as conn:
            conn.execute(
                sqlalchemy.text("INSERT INTO messages (content) VALUES (:content)"),
                {"content": content},
            )
            conn.commit()
        return jsonify({"status": "Message added!"})
    with db.connect() as conn:
        result = conn.execute(sqlalchemy.text("SELECT content FROM messages"))
        return jsonify({"messages": [row[0] for row in result]})


@app.errorhandler(Exception)
def failed(e):
    """A failed connect or query is an answer naming its cause, not a trap."""
    if isinstance(e, HTTPException):
        return e
    status, message = describe(e)
    return jsonify({"error": message}), status


# The component's wasi:http export: each request goes to the app through WSGI.
IncomingHandler = wasi_wsgi.handler(app)
