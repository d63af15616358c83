"""PHP (experimental): the ``opentelemetry`` extension, which lets the auto-instrumentation
packages hook functions, and the SDK, the OTLP exporter and the PDO and PSR-18 instrumentations
installed with Composer. An ini file in the bundle loads the extension and prepends the bundle's
``vendor/autoload.php``; ``PHP_INI_SCAN_DIR`` adds that file to the ones PHP already reads.

An extension must match the PHP that loads it (version, ZTS, extension API, libc), so the
bundle is built inside a throwaway helper container made from the application's own image:
``pecl install`` after the image's ``$PHPIZE_DEPS`` (apk or apt-get, as the official php images
document), Composer from getcomposer.org (checked against its published SHA-256), and the
packages from Packagist. The helper runs on Docker's default network, to reach the internet
and nothing of the host's; the result is copied out through the archive API, so a remote engine
works too. ``--from`` names a directory laid out as a bundle (``ext/opentelemetry.so``,
``vendor/autoload.php``) instead.

Limits: php-fpm clears its workers' environment unless the pool sets ``clear_env = no``, so
there the OTEL_* variables must also be passed through the pool configuration (``env[NAME] =
$NAME``); an app that sets ``auto_prepend_file`` itself is refused, since only one file can be
prepended; and the bundle's Composer packages are loaded beside the app's own, which may clash
when the app carries other versions of the same packages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from ophiond.containers.agents import Bundle, Target, cache_key, reuse_or_build, write_manifest
from ophiond.containers.agents.fetch import sha256_file, unpack_tar
from ophiond.containers.detect import libc
from ophiond.containers.engine import docker_errors, exec_json, last_log_lines, read_file
from ophiond.containers.inject import EnvPlanner, Settings
from ophiond.errors import ContainerError

log = logging.getLogger(__name__)

EXTENSION_VERSION = "1.2.1"  # PECL's opentelemetry; it needs PHP 8.1 or newer
OLDEST_PHP = (8, 1)
COMPOSER_VERSION = "2.8.12"
COMPOSER_DOWNLOADS = "https://getcomposer.org/download"
PACKAGES = {
    "open-telemetry/sdk": "^1.0",
    "open-telemetry/exporter-otlp": "^1.0",
    "php-http/guzzle7-adapter": "^1.0",
    "open-telemetry/opentelemetry-auto-pdo": "*",
    "open-telemetry/opentelemetry-auto-psr18": "*",
}
INI = "conf.d/zz-ophion-opentelemetry.ini"  # "zz": read after the image's own ini files
HELPER_TIMEOUT = 1200  # seconds: compiling the extension on a slow machine takes minutes
_HINT = (
    "check that Docker's containers reach pecl.php.net, getcomposer.org and packagist.org, or "
    "pass --from with a bundle directory (ext/opentelemetry.so, vendor/autoload.php)"
)
_INSPECT = 'echo json_encode([PHP_VERSION, (string) ini_get("auto_prepend_file")]);'
# Runs as root in the helper; "ophion:" lines are its progress in the failure report.
_SCRIPT = r"""set -eu
mkdir -p /bundle/ext
if command -v apk >/dev/null 2>&1; then
  echo "ophion: installing the build tools with apk"
  apk add --no-cache ${PHPIZE_DEPS:-autoconf dpkg-dev dpkg file g++ gcc libc-dev make pkgconf re2c} unzip >/dev/null
elif command -v apt-get >/dev/null 2>&1; then
  echo "ophion: installing the build tools with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ${PHPIZE_DEPS:-autoconf dpkg-dev file g++ gcc libc-dev make pkg-config re2c} unzip >/dev/null
else
  echo "ophion: the image has neither apk nor apt-get to install the build tools" >&2
  exit 3
fi
echo "ophion: building the opentelemetry extension $OPHION_EXT_VERSION with pecl"
pecl install "opentelemetry-$OPHION_EXT_VERSION" </dev/null
cp "$(php-config --extension-dir)/opentelemetry.so" /bundle/ext/opentelemetry.so
echo "ophion: fetching Composer $OPHION_COMPOSER_VERSION"
php -r '$base = getenv("OPHION_COMPOSER_URL") . "/" . getenv("OPHION_COMPOSER_VERSION");
  $sum = @file_get_contents("$base/composer.phar.sha256sum");
  if (!$sum || !copy("$base/composer.phar", "/tmp/composer.phar")) exit(5);
  if (hash_file("sha256", "/tmp/composer.phar") !== strtok(trim($sum), " ")) {
    fwrite(STDERR, "ophion: composer.phar does not match its published SHA-256\n"); exit(6);
  }'
printf '%s\n' "$OPHION_COMPOSER_JSON" >/bundle/composer.json
echo "ophion: installing the OpenTelemetry packages with Composer"
COMPOSER_ALLOW_SUPERUSER=1 COMPOSER_HOME=/tmp/composer \
  php -d extension=/bundle/ext/opentelemetry.so /tmp/composer.phar update --working-dir=/bundle \
  --no-dev --no-interaction --no-progress --optimize-autoloader
"""


class PhpAgent:
    language = "php"

    def prepare(self, target: Target, dry_run: bool) -> Bundle:
        version = self._version(target)
        libc_name = libc(lambda path, limit: read_file(target.container, path, limit), target.arch)
        image = str(target.container.attrs["Image"])
        if target.source is not None:
            digest = _bundle_digest(target.source)
            key = cache_key("php", version, libc_name, target.arch, "local", digest)
            origin = f"from {target.source}"
        else:
            match = re.match(r"(\d+)\.(\d+)", version)
            if match and (int(match[1]), int(match[2])) < OLDEST_PHP:
                raise ContainerError(
                    f"the container runs PHP {version}; the opentelemetry extension "
                    f"{EXTENSION_VERSION} needs PHP {'.'.join(map(str, OLDEST_PHP))} or newer"
                )
            pins = [EXTENSION_VERSION, COMPOSER_VERSION, PACKAGES]
            key = cache_key("php", version, libc_name, target.arch, image[:19], pins)
            origin = f"built for this image (extension {EXTENSION_VERSION})"
        bundle = Bundle(
            "php",
            key,
            f"OpenTelemetry PHP extension and SDK {origin}, PHP {version} ({libc_name}), "
            "experimental",
            target.cache_dir / key,
            details={"php": version, "libc": libc_name},
        )

        def build(scratch: Path) -> None:
            if target.source is not None:
                shutil.copytree(target.source, scratch, symlinks=True, dirs_exist_ok=True)
            else:
                target.progress("building the PHP bundle in a helper container (minutes)")
                self._build(target, image, scratch)
            write_ini(scratch, bundle.target)
            write_manifest(scratch, {"language": "php", "origin": origin, **bundle.details})

        return reuse_or_build(target, bundle, dry_run, build)

    def environment(self, planner: EnvPlanner, bundle: Bundle, settings: Settings) -> None:
        conf = f"{bundle.target}/conf.d"
        if "PHP_INI_SCAN_DIR" in planner.env:
            planner.extend("PHP_INI_SCAN_DIR", conf, ":")
        else:
            # A leading ':' stands for the directory PHP was built with: it keeps reading the
            # image's own conf.d, then ours.
            planner.replace("PHP_INI_SCAN_DIR", f":{conf}")
        planner.default("OTEL_PHP_AUTOLOAD_ENABLED", "true")

    def _version(self, target: Target) -> str:
        """The container's PHP version; refused when the app prepends a file of its own."""
        try:
            version, prepend = exec_json(
                target.container, ["php", "-r", _INSPECT], "asking the container's PHP"
            )
        except ContainerError:
            if target.detection.version:
                return target.detection.version
            raise
        # A previous injection's own file is not the app's (its environment is still in force).
        if prepend and not prepend.startswith("/otel-auto-instrumentation-php/"):
            raise ContainerError(
                f"the app sets auto_prepend_file={prepend}, and PHP prepends only one file; the "
                "OpenTelemetry autoloader needs it"
            )
        return str(version)

    def _build(self, target: Target, image: str, scratch: Path) -> None:
        client = target.client
        composer = {
            "require": PACKAGES,
            "minimum-stability": "beta",  # some instrumentations publish only betas
            "prefer-stable": True,
            "config": {"allow-plugins": {"php-http/discovery": True, "tbachert/spi": True}},
        }
        with docker_errors("creating the PHP build helper"):
            helper = client.containers.create(
                image,
                entrypoint=["/bin/sh", "-c", _SCRIPT],
                command=[],
                user="0",
                working_dir="/tmp",
                environment={
                    "OPHION_EXT_VERSION": EXTENSION_VERSION,
                    "OPHION_COMPOSER_VERSION": COMPOSER_VERSION,
                    "OPHION_COMPOSER_URL": COMPOSER_DOWNLOADS,
                    "OPHION_COMPOSER_JSON": json.dumps(composer),
                },
                labels={"io.ophion.helper": "php-bundle"},
            )
        try:
            self._run(client, helper)
            with docker_errors("copying the PHP bundle out of the helper"):
                stream, _stat = helper.get_archive("/bundle")
                unpack_tar(stream, scratch, "the helper's /bundle")
        finally:
            _remove(helper)
        for needed in ("ext/opentelemetry.so", "vendor/autoload.php"):
            if not (scratch / needed).is_file():
                raise ContainerError(f"the PHP build helper made no {needed}", hint=_HINT)

    @staticmethod
    def _run(client: Any, helper: Any) -> None:
        import requests.exceptions

        with docker_errors("starting the PHP build helper"):
            helper.start()
        try:
            status = helper.wait(timeout=HELPER_TIMEOUT).get("StatusCode")
        except requests.exceptions.RequestException as e:
            raise ContainerError(
                f"the PHP build helper did not finish within {HELPER_TIMEOUT // 60} minutes: {e}",
                hint=_HINT,
            ) from None
        if status != 0:
            lines = last_log_lines(client, helper.id, 12)
            raise ContainerError(
                f"building the PHP bundle failed (exit {status})"
                + (":\n  " + "\n  ".join(lines) if lines else ""),
                hint=_HINT,
            )


def _remove(helper: Any) -> None:
    """Remove the helper; a failure is reported but does not hide the build's own outcome."""
    import docker.errors
    import requests.exceptions

    try:
        helper.remove(force=True)
    except (docker.errors.APIError, requests.exceptions.RequestException) as e:
        log.warning("could not remove the PHP build helper %s: %s", helper.id, e)


def write_ini(directory: Path, target: str) -> None:
    """The ini file that loads the extension and the SDK's autoloader from the bundle."""
    (directory / "conf.d").mkdir(exist_ok=True)
    (directory / INI).write_text(
        f"extension={target}/ext/opentelemetry.so\nauto_prepend_file={target}/vendor/autoload.php\n"
    )


def _bundle_digest(source: Path) -> str:
    """A digest of a ``--from`` bundle directory, refused unless it is laid out as a bundle."""
    for needed in ("ext/opentelemetry.so", "vendor/autoload.php"):
        if not (source / needed).is_file():
            raise ContainerError(
                f"--from {source}: no {needed} there",
                hint="for PHP, --from names a bundle directory: ext/opentelemetry.so built for "
                "the container's PHP, and vendor/ from composer require open-telemetry/sdk ...",
            )
    # The extension and Composer's record of the packages identify a bundle's contents.
    installed = source / "vendor/composer/installed.json"
    parts = [
        sha256_file(source / "ext/opentelemetry.so"),
        sha256_file(installed) if installed.is_file() else "",
    ]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]
