{
  description = "Kafscale: Kafka-compatible streaming with stateless brokers and S3 storage";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    crane.url = "github:ipetkov/crane";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, crane, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        craneLib = crane.mkLib pkgs;
        src = craneLib.cleanCargoSource ./.;

        # etcd-client compiles etcd's protobufs; aws-lc-sys needs cmake.
        commonArgs = {
          inherit src;
          strictDeps = true;
          pname = "kafscale";
          version = "0.1.0";
          nativeBuildInputs = [ pkgs.protobuf pkgs.cmake pkgs.pkg-config pkgs.perl ];
          PROTOC = "${pkgs.protobuf}/bin/protoc";
        };

        # Dependencies are built once and shared by every package and check.
        cargoArtifacts = craneLib.buildDepsOnly commonArgs;

        binary = pname: cargoPackage: craneLib.buildPackage (commonArgs // {
          inherit cargoArtifacts pname;
          cargoExtraArgs = "--locked -p ${cargoPackage} --bin ${pname}";
          doCheck = false;
          meta.mainProgram = pname;
        });

        broker = binary "kafscale-broker" "kafscale-broker-server";
        flusher = binary "kafscale-flusher" "kafscale-flusher";
        operator = binary "kafscale-operator" "kafscale-operator";

        image = name: pkg: port: pkgs.dockerTools.buildLayeredImage {
          inherit name;
          tag = "latest";
          contents = [ pkgs.cacert ];
          # A writable /tmp, as in scripts/build-images.sh's images.
          extraCommands = "mkdir -m 1777 tmp";
          config = {
            Entrypoint = [ "${pkg}/bin/${pkg.meta.mainProgram}" ];
            User = "65532:65532";
            ExposedPorts = { "${toString port}/tcp" = { }; };
            Env = [ "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt" ];
            # scripts/build-images.sh builds the same images without Nix.
            Labels = {
              "org.opencontainers.image.title" = name;
              "org.opencontainers.image.version" = pkg.version;
              "org.opencontainers.image.licenses" = "Apache-2.0";
            };
          };
        };
      in
      {
        packages = {
          inherit broker flusher operator;
          default = broker;
          broker-image = image "kafscale-broker" broker 9092;
          flusher-image = image "kafscale-flusher" flusher 9095;
          operator-image = image "kafscale-operator" operator 8080;
        };

        checks = {
          inherit broker flusher operator;
          fmt = craneLib.cargoFmt { inherit src; };
          clippy = craneLib.cargoClippy (commonArgs // {
            inherit cargoArtifacts;
            cargoClippyExtraArgs = "--workspace --all-targets -- -D warnings";
          });
          # Unit and in-process integration tests; the end-to-end suites need
          # etcd, MinIO and Kafka clients and run through scripts/test-all.sh.
          tests = craneLib.cargoTest (commonArgs // { inherit cargoArtifacts; });
        };

        devShells.default = craneLib.devShell {
          checks = self.checks.${system};
          packages = with pkgs; [
            etcd
            minio
            kcat
            go
            jdk17
            maven
            python311
            kubernetes-helm
            kubectl
            kind
            protobuf
          ];
          PROTOC = "${pkgs.protobuf}/bin/protoc";
        };
      });
}
